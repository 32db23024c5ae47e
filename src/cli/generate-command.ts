// `distrifusion generate`: text to image with a diffusers SDXL / SD folder (or the built-in demo model), on
// one device or split across ranks with DistriFusion.
import { basename, join, resolve } from 'node:path';
import { type Command, Option } from 'commander';
import { readJson } from '../io/diffusers-folder.js';
import { encodePng, imageFromTensor, writeFileAtomic } from '../io/png.js';
import { writeSafetensors } from '../io/safetensors.js';
import { LOW_MEMORY_SEGMENT_BYTES, PARALLELISMS, SPLIT_SCHEMES, SYNC_MODES } from '../parallel/config.js';
import { DEMO_MODEL_FORMAT, ensureDemoModel } from '../pipelines/demo-model.js';
import { makeScheduler } from '../pipelines/denoise.js';
import { DistriSDPipeline, DistriSDXLPipeline } from '../pipelines/distri-pipelines.js';
import type { GenerateOptions, GenerateResult } from '../pipelines/generate-options.js';
import { StableDiffusionPipeline } from '../pipelines/stable-diffusion.js';
import { StableDiffusionXLPipeline } from '../pipelines/stable-diffusion-xl.js';
import { SCHEDULER_NAMES } from '../schedulers/scheduler.js';
import {
  DEFAULT_STEPS,
  DEFAULT_WARMUP,
  type GenerateArgs,
  OUTPUT_TYPES,
  parseGenerateArgs,
} from './generate-args.js';
import { outputPaths, parametersText, samplerLabel } from './generate-output.js';
import { rankTable, splitDecodeLine, stepReporter } from './progress.js';

type ModelKind = 'sdxl' | 'sd';

const CLASSES: Readonly<Record<string, ModelKind>> = {
  StableDiffusionXLPipeline: 'sdxl',
  StableDiffusionPipeline: 'sd',
};

const DEMO_NOTICE = `No --model given: using the built-in demo model (the SDXL layout at tiny size, with random weights).
It runs the whole pipeline in seconds, but its images are noise-like: it has learned nothing.
For real images, point --model at a diffusers SDXL folder, e.g. a local clone of
stabilityai/stable-diffusion-xl-base-1.0 (git lfs clone https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0).
`;

export function registerGenerateCommand(program: Command): void {
  const list = (xs: readonly string[]) => xs.join('|');
  program
    .command('generate')
    .description(
      'generate images from a text prompt (SDXL or SD 1.x/2.x), optionally split across ranks with DistriFusion',
    )
    .requiredOption('--prompt <text>', 'what to draw')
    .option(
      '--model <dir>',
      'diffusers model folder (model_index.json picks SDXL or SD); default: the built-in demo model',
    )
    .option('--negative-prompt <text>', 'what to avoid')
    .option('--steps <n>', `denoising steps (default: ${DEFAULT_STEPS})`)
    .option(
      '--guidance-scale <x>',
      'classifier-free guidance weight, <= 1 turns it off (default: 5 for SDXL, 7.5 for SD)',
    )
    .option('--scheduler <name>', `${list(SCHEDULER_NAMES)} (default: the model's scheduler_config.json)`)
    .option('--height <px>', "image height, a multiple of 8 (default: the model's size; demo model: 256)")
    .option('--width <px>', "image width, a multiple of 8 (default: the model's size; demo model: 256)")
    .option('--seed <n>', 'seed of the initial noise (default: random, printed)')
    .option('--num-images <n>', 'images per prompt (default: 1)')
    .option(
      '--threads <n>',
      'CPU threads for the text encoders, VAE and single-device UNet (default: all cores)',
    )
    .option('--device <name>', 'cpu|cuda:N|webgpu, or a comma-separated list, one per rank (default: cpu)')
    .option('--variant <name>', 'weight file variant, e.g. fp16 (diffusion_pytorch_model.fp16.safetensors)')
    .option(
      '--out <file>',
      'output file: .png, or .safetensors with --output-type latent; several images get -0, -1, … (default: image.png / latents.safetensors)',
    )
    .addOption(new Option('--output-type <type>', `${list(OUTPUT_TYPES)} (default: image)`))
    .optionsGroup('DistriFusion (--ranks > 1 or any other flag here runs the UNet on ranks):')
    .option('--ranks <n>', 'number of ranks: worker threads, or one device each (default: 1)')
    .option('--threads-per-rank <n>', 'CPU threads per rank (default: all cores / ranks)')
    .option(
      '--warmup-steps <n>',
      `synchronous steps before the asynchronous ones (default: ${DEFAULT_WARMUP})`,
    )
    .option('--sync-mode <mode>', `${list(SYNC_MODES)} (default: corrected_async_gn)`)
    .option('--parallelism <kind>', `${list(PARALLELISMS)} (default: patch)`)
    .option('--no-split-batch', 'do not split classifier-free guidance across two rank groups')
    .option(
      '--split-vae-decode',
      'decode the image in row bands on the ranks too, not on the calling thread (measured in the README)',
    )
    .option(
      '--split-scheme <scheme>',
      `${list(SPLIT_SCHEMES)}, how naive_patch cuts the latent (default: row)`,
    )
    .option(
      '--low-memory [mib]',
      `cut the asynchronous graph at self-attentions, each segment holding at most MIB of K/V (default ${
        LOW_MEMORY_SEGMENT_BYTES / 2 ** 20
      }; 0: a cut at every one): less memory, slower steps (measured in the README)`,
    )
    .action(async (_opts: unknown, cmd: Command) => {
      await runGenerate(parseGenerateArgs(cmd.opts()));
    });
}

/** The pipeline class a diffusers folder asks for (model_index.json's _class_name). */
async function modelKind(dir: string): Promise<ModelKind> {
  const path = join(dir, 'model_index.json');
  const index = await readJson(path).catch((e: Error) => {
    throw new Error(`--model: ${e.message}; expected a diffusers pipeline folder with model_index.json`);
  });
  const cls = index._class_name;
  const kind = typeof cls === 'string' ? CLASSES[cls] : undefined;
  if (!kind) {
    throw new Error(
      `${path}: _class_name ${JSON.stringify(cls)} is not supported; expected ${Object.keys(CLASSES).join(' or ')}`,
    );
  }
  return kind;
}

type Base = StableDiffusionXLPipeline | StableDiffusionPipeline;
type Runner = { generate(o: GenerateOptions): Promise<GenerateResult>; dispose(): Promise<void> };

async function loadPipelines(
  kind: ModelKind,
  dir: string,
  a: GenerateArgs,
): Promise<{ base: Base; run: Runner; distri?: DistriSDXLPipeline | DistriSDPipeline }> {
  const options = { threads: a.threads, device: a.devices[0]!, ...(a.variant ? { variant: a.variant } : {}) };
  const base =
    kind === 'sdxl'
      ? await StableDiffusionXLPipeline.fromPretrained(dir, options)
      : await StableDiffusionPipeline.fromPretrained(dir, options);
  if (!a.distri) return { base, run: base };
  const [dh, dw] = base.defaultSize;
  const d = a.distri;
  const config = {
    height: a.height ?? dh,
    width: a.width ?? dw,
    ranks: d.ranks,
    warmupSteps: d.warmupSteps,
    mode: d.mode,
    parallelism: d.parallelism,
    splitBatch: d.splitBatch,
    splitScheme: d.splitScheme,
    splitVaeDecode: d.splitVaeDecode,
    lowMemory: d.lowMemory,
    ...(d.lowMemorySegmentBytes !== undefined ? { lowMemorySegmentBytes: d.lowMemorySegmentBytes } : {}),
    threadsPerRank: d.threadsPerRank,
    device: a.devices.length === 1 ? a.devices[0]! : a.devices,
  };
  const extra = { vaeDir: join(dir, 'vae'), ...(a.variant ? { variant: a.variant } : {}) };
  const unet = join(dir, 'unet');
  const distri =
    base instanceof StableDiffusionXLPipeline
      ? DistriSDXLPipeline.fromPipeline(base, unet, config, extra)
      : DistriSDPipeline.fromPipeline(base, unet, config, extra);
  return { base, run: distri, distri };
}

export async function runGenerate(a: GenerateArgs): Promise<void> {
  const err = process.stderr;
  const kind: ModelKind = a.model === undefined ? 'sdxl' : await modelKind(a.model);
  let dir: string;
  if (a.model === undefined) {
    err.write(DEMO_NOTICE);
    dir = await ensureDemoModel();
  } else {
    dir = a.model;
  }
  err.write(`loading ${dir}\n`);
  const { base, run, distri } = await loadPipelines(kind, dir, a);
  try {
    const [dh, dw] = base.defaultSize;
    const height = a.height ?? dh;
    const width = a.width ?? dw;
    const cfgScale = a.guidanceScale ?? (kind === 'sdxl' ? 5 : 7.5);
    const schedulerConfig = base.components.schedulerConfig;
    const sampler = samplerLabel(makeScheduler(schedulerConfig, a.scheduler).name, schedulerConfig);
    const ranks = a.distri ? `, ${a.distri.ranks} rank(s), ${a.distri.mode}` : '';
    err.write(
      `${width}x${height}, ${a.steps} steps, ${sampler}, CFG ${cfgScale}, seed ${a.seed}${a.randomSeed ? ' (random)' : ''}${ranks}\n`,
    );
    const progress = stepReporter(err, a.steps);
    let result: GenerateResult;
    try {
      result = await run.generate({
        prompt: a.prompt,
        ...(a.negativePrompt !== undefined ? { negativePrompt: a.negativePrompt } : {}),
        numInferenceSteps: a.steps,
        guidanceScale: cfgScale,
        ...(a.scheduler ? { scheduler: a.scheduler } : {}),
        seed: a.seed,
        height,
        width,
        numImagesPerPrompt: a.numImages,
        outputType: a.outputType,
        onStep: (p) => progress.step(p.step, p.steps, p.ms),
      });
    } finally {
      progress.stop();
    }
    const model = a.model === undefined ? `distrifusion-${DEMO_MODEL_FORMAT}` : basename(resolve(a.model));
    const parameters = (batchPos: number) =>
      parametersText({
        prompt: a.prompt,
        ...(a.negativePrompt ? { negativePrompt: a.negativePrompt } : {}),
        steps: a.steps,
        sampler,
        cfgScale,
        seed: a.seed,
        width,
        height,
        model,
        batchSize: a.numImages,
        batchPos,
        ...(a.distri ? { distri: a.distri } : {}),
      });
    const written = await writeOutputs(a, result, parameters);
    if (distri) err.write(`${rankTable(distri.stats)}\n`);
    const decode = distri?.decodeStats.at(-1);
    if (decode) err.write(`${splitDecodeLine(decode)}\n`);
    err.write(`${timingsLine(result.timings)}\n`);
    for (const p of written) process.stdout.write(`${p}\n`);
  } finally {
    await run.dispose();
  }
}

/** Encode, denoise and decode times; s/step leaves out the first step, which compiles the graphs. */
function timingsLine(t: GenerateResult['timings']): string {
  const s = (ms: number) => (ms / 1000).toFixed(2);
  const later = t.stepMs.slice(1);
  const perStep = later.length > 0 ? later.reduce((a, b) => a + b, 0) / later.length : t.denoiseMs;
  const first = later.length > 0 ? `, first step ${s(t.stepMs[0]!)} s with graph compilation` : '';
  return `encode ${s(t.encodeMs)} s | denoise ${s(t.denoiseMs)} s (${(perStep / 1000).toFixed(3)} s/step${first}) | decode ${s(t.decodeMs)} s`;
}

/** PNGs (one per image) or one safetensors file of latents, each written atomically. */
async function writeOutputs(
  a: GenerateArgs,
  r: GenerateResult,
  parameters: (batchPos: number) => string,
): Promise<string[]> {
  if (a.outputType === 'latent') {
    await writeSafetensors(a.out, { latents: r.latents }, { metadata: { parameters: parameters(0) } });
    return [a.out];
  }
  const images = r.images!;
  const paths = outputPaths(a.out, images.shape[0]!);
  // Encode everything first, so a failure does not leave a partial set behind.
  const pngs = paths.map((_, i) => encodePng(imageFromTensor(images, i), { parameters: parameters(i) }));
  for (const [i, p] of paths.entries()) await writeFileAtomic(p, pngs[i]!);
  return paths;
}
