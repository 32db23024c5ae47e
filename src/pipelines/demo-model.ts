// The built-in demo model: a tiny SDXL-shaped checkpoint with seeded random weights, written on first use
// into a cache folder in the diffusers layout, so `StableDiffusionXLPipeline.fromPretrained(dir)` loads it
// like any real one and nothing has to be downloaded. Its images are noise-like: it shows the machinery,
// not a trained model.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { writeSafetensors } from '../io/safetensors.js';
import { clipVocabularyFiles } from '../models/clip-vocabulary-export.js';
import {
  DEMO_MODEL_FORMAT,
  DEMO_MODEL_SEED,
  MODEL_INDEX,
  SCHEDULER_CONFIG,
  TEXT_ENCODER_2_CONFIG,
  TEXT_ENCODER_CONFIG,
  tokenizerConfigs,
  UNET_CONFIG,
  VAE_CONFIG,
} from './demo-model-config.js';
import { type DemoComponent, demoWeights } from './demo-model-weights.js';

export { DEMO_MODEL_FORMAT } from './demo-model-config.js';

export interface DemoModelOptions {
  /** Folder that holds the demo model folder. Default: see defaultCacheDir. */
  cacheDir?: string;
}

/** Written last: a folder without it (or with another format) is not a finished demo model. */
const MARKER = 'distrifusion-demo.json';

const COMPONENTS: ReadonlyArray<{ name: DemoComponent; config: Record<string, unknown>; file: string }> = [
  { name: 'unet', config: UNET_CONFIG, file: 'diffusion_pytorch_model.safetensors' },
  { name: 'vae', config: VAE_CONFIG, file: 'diffusion_pytorch_model.safetensors' },
  { name: 'text_encoder', config: TEXT_ENCODER_CONFIG, file: 'model.safetensors' },
  { name: 'text_encoder_2', config: TEXT_ENCODER_2_CONFIG, file: 'model.safetensors' },
];

/** DISTRIFUSION_CACHE, else $XDG_CACHE_HOME/distrifusion, else ~/.cache/distrifusion. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.DISTRIFUSION_CACHE) return env.DISTRIFUSION_CACHE;
  if (env.XDG_CACHE_HOME) return join(env.XDG_CACHE_HOME, 'distrifusion');
  return join(homedir(), '.cache', 'distrifusion');
}

/** The demo model's folder, written there on first use. Safe against concurrent callers and crashes. */
export async function ensureDemoModel(options: DemoModelOptions = {}): Promise<string> {
  const cache = options.cacheDir ?? defaultCacheDir();
  const dir = join(cache, DEMO_MODEL_FORMAT);
  if (await isComplete(dir)) return dir;
  try {
    await mkdir(cache, { recursive: true });
  } catch (e) {
    throw cacheError(cache, e);
  }
  let temp: string;
  try {
    temp = await mkdtemp(join(cache, `.${DEMO_MODEL_FORMAT}.tmp-`));
  } catch (e) {
    throw cacheError(cache, e);
  }
  try {
    await writeDemoModel(temp);
    await publish(temp, dir);
  } finally {
    await rm(temp, { recursive: true, force: true });
  }
  return dir;
}

function cacheError(cache: string, e: unknown): Error {
  const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
  return new Error(
    `${cache}: cannot write the demo model there (${code}); set DISTRIFUSION_CACHE to a writable folder`,
    {
      cause: e,
    },
  );
}

async function isComplete(dir: string): Promise<boolean> {
  let marker: unknown;
  try {
    marker = JSON.parse(await readFile(join(dir, MARKER), 'utf8'));
  } catch {
    return false;
  }
  if ((marker as { format?: unknown }).format !== DEMO_MODEL_FORMAT) return false;
  return COMPONENTS.every((c) => existsSync(join(dir, c.name, c.file)));
}

/**
 * Moves the finished temporary folder to `dir` with one rename. If another process got there first with a
 * complete model, keep theirs; an incomplete folder left by older code or a user is moved aside first.
 */
async function publish(temp: string, dir: string): Promise<void> {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await rename(temp, dir);
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'EPERM') throw e;
    }
    if (await isComplete(dir)) return;
    const aside = `${dir}.stale-${process.pid}-${randomBytes(4).toString('hex')}`;
    await rename(dir, aside).catch(() => undefined);
    await rm(aside, { recursive: true, force: true });
  }
  throw new Error(`${dir}: cannot move the demo model into place (the folder keeps changing)`);
}

async function writeJson(path: string, value: unknown): Promise<void> {
  await writeFile(path, `${JSON.stringify(value, null, 2)}\n`);
}

/** Writes every file of the demo model into `dir` (an empty folder), the marker last. */
export async function writeDemoModel(dir: string): Promise<void> {
  await writeJson(join(dir, 'model_index.json'), MODEL_INDEX);
  await mkdir(join(dir, 'scheduler'));
  await writeJson(join(dir, 'scheduler', 'scheduler_config.json'), SCHEDULER_CONFIG);
  const vocabulary = clipVocabularyFiles();
  for (const [name, pad] of [
    ['tokenizer', '<|endoftext|>'],
    ['tokenizer_2', '!'],
  ] as const) {
    const sub = join(dir, name);
    await mkdir(sub);
    const { config, specialTokens } = tokenizerConfigs(pad);
    await writeFile(join(sub, 'vocab.json'), vocabulary.vocabJson);
    await writeFile(join(sub, 'merges.txt'), vocabulary.mergesTxt);
    await writeJson(join(sub, 'tokenizer_config.json'), config);
    await writeJson(join(sub, 'special_tokens_map.json'), specialTokens);
  }
  for (const c of COMPONENTS) {
    const sub = join(dir, c.name);
    await mkdir(sub);
    await writeJson(join(sub, 'config.json'), c.config);
    await writeSafetensors(join(sub, c.file), demoWeights(c.name, c.config, DEMO_MODEL_SEED), {
      dtype: 'F16',
      metadata: { format: 'pt' },
    });
  }
  await writeJson(join(dir, MARKER), {
    format: DEMO_MODEL_FORMAT,
    seed: DEMO_MODEL_SEED,
    note: 'distrifusion demo model: random weights, for trying the pipeline without a download',
  });
}
