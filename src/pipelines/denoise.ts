// The text-to-image loop shared by the SD and SDXL pipelines (diffusers' __call__ after encode_prompt):
// latents, the scheduler loop with classifier-free guidance, and the VAE decode.
import { performance } from 'node:perf_hooks';
import type { Tensor } from '../io/tensor.js';
import type { AutoencoderKL } from '../models/autoencoder-kl.js';
import type { UNet2DConditionModel, UNetForwardInputs } from '../models/unet-2d-condition.js';
import { Generator, randn } from '../schedulers/random.js';
import {
  createScheduler,
  type Scheduler,
  type SchedulerName,
  schedulerFromConfig,
} from '../schedulers/scheduler.js';
import type { GenerateOptions, GenerateResult } from './generate-options.js';
import { checkSize, positiveInt, randomSeed } from './generate-options.js';

/** Text conditioning for the whole UNet batch ([negative…, positive…] when guidance is on). */
export interface Conditioning {
  encoderHiddenStates: Tensor;
  textEmbeds?: Tensor;
  timeIds?: Tensor;
}

/** One UNet evaluation of denoising step `step` (parallel runners need the index for warmup). */
export type UNetCall = (step: number, inputs: UNetForwardInputs) => Promise<Tensor>;

/** AutoencoderKL.decode's contract: latents already divided by scaling_factor → image in [-1, 1]. */
export type VaeDecodeCall = (latents: Tensor) => Promise<Tensor>;

/** Where generate() runs its models; absent ones run on the calling thread. */
export interface ModelRunners {
  unet?: UNetCall;
  vaeDecode?: VaeDecodeCall;
}

export interface DenoiseSetup {
  options: GenerateOptions;
  schedulerConfig: Readonly<Record<string, unknown>>;
  vae: AutoencoderKL;
  latentChannels: number;
  height: number;
  width: number;
  /** Images in the batch (prompts × images per prompt). */
  images: number;
  guidanceScale: number;
  conditioning: Conditioning;
  encodeMs: number;
  unet: UNetCall;
  vaeDecode?: VaeDecodeCall;
}

/** The scheduler for a run: the option's name over the checkpoint config, else the config's own class. */
export function makeScheduler(
  config: Readonly<Record<string, unknown>>,
  name: SchedulerName | undefined,
): Scheduler {
  if (name) return createScheduler(name, config);
  try {
    return schedulerFromConfig(config);
  } catch {
    // A class we do not implement (e.g. LMSDiscreteScheduler): DDIM on the same noise schedule.
    return createScheduler('ddim', config);
  }
}

function repeatBatch(t: Tensor, times: number): Tensor {
  const out = new Float32Array(t.data.length * times);
  for (let i = 0; i < times; i++) out.set(t.data, i * t.data.length);
  return { data: out, shape: [t.shape[0]! * times, ...t.shape.slice(1)] };
}

export async function denoise(s: DenoiseSetup): Promise<GenerateResult> {
  const o = s.options;
  const steps = positiveInt('numInferenceSteps', o.numInferenceSteps, 50);
  const scheduler = makeScheduler(s.schedulerConfig, o.scheduler);
  scheduler.setTimesteps(steps);
  const cfg = s.guidanceScale > 1;
  const f = s.vae.scaleFactor;
  const shape = [s.images, s.latentChannels, s.height / f, s.width / f];
  const seed = o.seed ?? randomSeed();
  const generator = new Generator(seed);
  let noise: Float32Array;
  if (o.latents) {
    if (o.latents.shape.join() !== shape.join()) {
      throw new Error(`latents: expected shape [${shape.join(', ')}], got [${o.latents.shape.join(', ')}]`);
    }
    noise = o.latents.data;
  } else {
    noise = randn(shape, generator);
  }
  const sigma = Math.fround(scheduler.initNoiseSigma);
  let latents: Float32Array = Float32Array.from(noise, (v) => v * sigma);
  const stepMs: number[] = [];
  const t0 = performance.now();
  const timesteps = [...scheduler.timesteps];
  for (const [i, t] of timesteps.entries()) {
    const ts = performance.now();
    const input = cfg ? repeatBatch({ data: latents, shape }, 2).data : latents;
    const scaled = scheduler.scaleModelInput(input, t);
    const sample = { data: scaled, shape: [cfg ? 2 * s.images : s.images, ...shape.slice(1)] };
    const c = s.conditioning;
    const noisePred = await s.unet(i, {
      sample,
      timestep: t,
      encoderHiddenStates: c.encoderHiddenStates,
      ...(c.textEmbeds ? { textEmbeds: c.textEmbeds } : {}),
      ...(c.timeIds ? { timeIds: c.timeIds } : {}),
    });
    let guided: Float32Array = noisePred.data;
    if (cfg) {
      const n = latents.length;
      guided = new Float32Array(n);
      const g = s.guidanceScale;
      for (let k = 0; k < n; k++) {
        const u = noisePred.data[k]!;
        guided[k] = u + g * (noisePred.data[n + k]! - u);
      }
    }
    latents = scheduler.step(guided, t, latents, {
      generator,
      ...(o.eta !== undefined ? { eta: o.eta } : {}),
    }).prevSample;
    stepMs.push(performance.now() - ts);
    o.onStep?.({
      step: i,
      steps: timesteps.length,
      timestep: t,
      ms: stepMs[i]!,
      noisePred,
      latents: { data: latents, shape },
    });
  }
  const denoiseMs = performance.now() - t0;
  const final: Tensor = { data: latents, shape };
  let images: Tensor | undefined;
  let decodeMs = 0;
  if ((o.outputType ?? 'image') === 'image') {
    const td = performance.now();
    images = await decodeToImages(s.vae, final, s.vaeDecode);
    decodeMs = performance.now() - td;
  }
  return {
    ...(images ? { images } : {}),
    latents: final,
    seed,
    timesteps,
    timings: { encodeMs: s.encodeMs, denoiseMs, decodeMs, stepMs },
  };
}

/** vae.decode(latents / scaling_factor), then (x / 2 + 0.5).clamp(0, 1). */
export async function decodeToImages(
  vae: AutoencoderKL,
  latents: Tensor,
  decode: VaeDecodeCall = (z) => vae.decode(z),
): Promise<Tensor> {
  const k = Math.fround(vae.config.scalingFactor);
  const decoded = await decode({
    data: Float32Array.from(latents.data, (v) => v / k),
    shape: latents.shape,
  });
  const out = Float32Array.from(decoded.data, (v) => Math.min(1, Math.max(0, v / 2 + 0.5)));
  return { data: out, shape: decoded.shape };
}

/** What an SD or SDXL pipeline brings to text-to-image: its models and how it conditions the UNet. */
export interface TextToImageParts {
  unet: UNet2DConditionModel;
  vae: AutoencoderKL;
  schedulerConfig: Readonly<Record<string, unknown>>;
  defaultGuidance: number;
  conditioning(
    o: GenerateOptions,
    height: number,
    width: number,
    cfg: boolean,
  ): Promise<{ cond: Conditioning; images: number }>;
}

/** The model's native size: the UNet's sample_size in latent pixels times the VAE factor. */
export function defaultSize(unet: UNet2DConditionModel, vae: AutoencoderKL): [number, number] {
  const [h, w] = unet.config.sampleSize;
  return [h * vae.scaleFactor, w * vae.scaleFactor];
}

/** diffusers' __call__: check sizes, encode the prompts, denoise, decode. */
export async function textToImage(
  parts: TextToImageParts,
  options: GenerateOptions,
  runners: ModelRunners = {},
): Promise<GenerateResult> {
  const [dh, dw] = defaultSize(parts.unet, parts.vae);
  const height = options.height ?? dh;
  const width = options.width ?? dw;
  checkSize('height', height, 8);
  checkSize('width', width, 8);
  const guidanceScale = options.guidanceScale ?? parts.defaultGuidance;
  const t0 = performance.now();
  const { cond, images } = await parts.conditioning(options, height, width, guidanceScale > 1);
  return denoise({
    options,
    schedulerConfig: parts.schedulerConfig,
    vae: parts.vae,
    latentChannels: parts.unet.config.inChannels,
    height,
    width,
    images,
    guidanceScale,
    conditioning: cond,
    encodeMs: performance.now() - t0,
    unet: runners.unet ?? ((_, inputs) => parts.unet.forward(inputs)),
    ...(runners.vaeDecode ? { vaeDecode: runners.vaeDecode } : {}),
  });
}
