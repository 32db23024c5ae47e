// `distrifusion generate` flags: checked all at once, before anything is loaded, with errors that name the
// flag, what was expected and what was found.
import { existsSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { basename, dirname, extname, resolve } from 'node:path';
import { executionProviders } from '../graph/session.js';
import {
  PARALLELISMS,
  type Parallelism,
  SPLIT_SCHEMES,
  type SplitScheme,
  SYNC_MODES,
  type SyncMode,
} from '../parallel/config.js';
import { randomSeed } from '../pipelines/generate-options.js';
import { SCHEDULER_NAMES, type SchedulerName } from '../schedulers/scheduler.js';

export type OutputType = 'image' | 'latent';
export const OUTPUT_TYPES: readonly OutputType[] = ['image', 'latent'];

export interface DistriArgs {
  ranks: number;
  threadsPerRank: number;
  warmupSteps: number;
  mode: SyncMode;
  parallelism: Parallelism;
  splitBatch: boolean;
  splitScheme: SplitScheme;
  /** --split-vae-decode: the VAE decodes in row bands on the ranks (DistriConfig.splitVaeDecode). */
  splitVaeDecode: boolean;
  lowMemory: boolean;
  /** --low-memory MIB, in bytes (DistriConfig.lowMemorySegmentBytes); absent: its default. */
  lowMemorySegmentBytes?: number;
}

export interface GenerateArgs {
  prompt: string;
  negativePrompt?: string;
  /** A diffusers folder; absent: the built-in demo model. */
  model?: string;
  steps: number;
  guidanceScale?: number;
  scheduler?: SchedulerName;
  height?: number;
  width?: number;
  seed: number;
  /** True when no --seed was given (the seed was drawn here, to be printed). */
  randomSeed: boolean;
  numImages: number;
  threads: number;
  /** One device, or one per rank. */
  devices: string[];
  variant?: string;
  out: string;
  outputType: OutputType;
  /** Present when any DistriFusion flag was given. */
  distri?: DistriArgs;
}

/** What commander hands over: strings for valued flags, `splitBatch: false` for --no-split-batch. */
export type RawGenerateOptions = Record<string, unknown>;

export const DEFAULT_STEPS = 50;
export const DEFAULT_WARMUP = 4;

class FlagError extends Error {
  constructor(flag: string, expected: string, got: unknown) {
    super(`--${flag}: expected ${expected}, got ${JSON.stringify(got)}`);
    this.name = 'FlagError';
  }
}

function text(o: RawGenerateOptions, key: string, flag: string): string | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new FlagError(flag, 'a value', v);
  return v;
}

/** A decimal integer >= min (no signs, exponents, fractions or trailing junk). */
function int(o: RawGenerateOptions, key: string, flag: string, min: number): number | undefined {
  const s = text(o, key, flag);
  if (s === undefined) return undefined;
  const expected = `an integer >= ${min}`;
  if (!/^\d+$/.test(s.trim())) throw new FlagError(flag, expected, s);
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n < min) throw new FlagError(flag, expected, s);
  return n;
}

function oneOf<T extends string>(
  o: RawGenerateOptions,
  key: string,
  flag: string,
  allowed: readonly T[],
): T | undefined {
  const s = text(o, key, flag);
  if (s === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(s))
    throw new FlagError(flag, `one of ${allowed.join(', ')}`, s);
  return s as T;
}

function pixels(o: RawGenerateOptions, key: 'height' | 'width'): number | undefined {
  const v = int(o, key, key, 8);
  if (v !== undefined && v % 8 !== 0) {
    throw new FlagError(
      key,
      `a multiple of 8 (the VAE's scale factor), e.g. ${Math.round(v / 8) * 8}`,
      String(v),
    );
  }
  return v;
}

function devices(o: RawGenerateOptions): string[] {
  const s = text(o, 'device', 'device') ?? 'cpu';
  const list = s.split(',').map((d) => d.trim());
  for (const d of list) {
    if (!/^(cpu|webgpu|cuda(:\d+)?)$/.test(d))
      throw new FlagError('device', 'cpu, cuda, cuda:N or webgpu (comma-separated: one per rank)', s);
    try {
      executionProviders(d);
    } catch (e) {
      throw new Error(`--device: ${(e as Error).message}`);
    }
  }
  return list;
}

function output(o: RawGenerateOptions, outputType: OutputType): string {
  const ext = outputType === 'latent' ? '.safetensors' : '.png';
  const out = text(o, 'out', 'out') ?? (outputType === 'latent' ? 'latents.safetensors' : 'image.png');
  if (extname(out).toLowerCase() !== ext || basename(out) === ext) {
    throw new FlagError('out', `a file name ending in ${ext} (for --output-type ${outputType})`, out);
  }
  const dir = dirname(resolve(out));
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new Error(
      `--out: folder ${dir} does not exist; expected an existing folder for ${JSON.stringify(out)}`,
    );
  }
  return out;
}

/** A size in MiB (>= 0, fractions allowed) as bytes; undefined when `text` is not one. */
export function mebibytesToBytes(text: string): number | undefined {
  const mib = Number(text);
  if (text.trim() === '' || !Number.isFinite(mib) || mib < 0) return undefined;
  return Math.round(mib * 2 ** 20);
}

/** --low-memory [MiB]: off when absent, else on with the segment size in bytes (undefined: its default). */
function lowMemory(o: RawGenerateOptions): { on: boolean; segmentBytes?: number } {
  const v = o.lowMemory;
  if (v === undefined || v === false) return { on: false };
  if (v === true) return { on: true };
  const bytes = typeof v === 'string' ? mebibytesToBytes(v) : undefined;
  if (bytes === undefined) {
    throw new FlagError('low-memory', 'no value, or the MiB of K/V one segment may hold (>= 0)', v);
  }
  return { on: true, segmentBytes: bytes };
}

/** True when any flag that only makes sense with ranks was given. */
function wantsDistri(o: RawGenerateOptions, ranks: number | undefined): boolean {
  if (ranks !== undefined && ranks > 1) return true;
  if (o.splitBatch === false || o.splitVaeDecode === true || o.lowMemory !== undefined) return true;
  return ['parallelism', 'syncMode', 'warmupSteps', 'splitScheme', 'threadsPerRank'].some(
    (k) => o[k] !== undefined,
  );
}

export function parseGenerateArgs(o: RawGenerateOptions): GenerateArgs {
  const prompt = text(o, 'prompt', 'prompt');
  if (prompt === undefined) throw new Error('--prompt: required (the text to generate an image of)');
  const outputType = oneOf(o, 'outputType', 'output-type', OUTPUT_TYPES) ?? 'image';
  const guidance = text(o, 'guidanceScale', 'guidance-scale');
  const guidanceScale = guidance === undefined ? undefined : Number(guidance);
  if (
    guidanceScale !== undefined &&
    (guidance!.trim() === '' || !Number.isFinite(guidanceScale) || guidanceScale < 0)
  ) {
    throw new FlagError(
      'guidance-scale',
      'a number >= 0 (<= 1 turns classifier-free guidance off)',
      guidance,
    );
  }
  const model = text(o, 'model', 'model');
  if (model !== undefined && (!existsSync(model) || !statSync(model).isDirectory())) {
    throw new Error(
      `--model: folder ${JSON.stringify(model)} does not exist; expected a diffusers model folder`,
    );
  }
  const seed = int(o, 'seed', 'seed', 0);
  const ranks = int(o, 'ranks', 'ranks', 1);
  const threads = int(o, 'threads', 'threads', 1) ?? availableParallelism();
  const args: GenerateArgs = {
    prompt,
    negativePrompt: text(o, 'negativePrompt', 'negative-prompt'),
    model,
    steps: int(o, 'steps', 'steps', 1) ?? DEFAULT_STEPS,
    guidanceScale,
    scheduler: oneOf(o, 'scheduler', 'scheduler', SCHEDULER_NAMES),
    height: pixels(o, 'height'),
    width: pixels(o, 'width'),
    seed: seed ?? randomSeed(),
    randomSeed: seed === undefined,
    numImages: int(o, 'numImages', 'num-images', 1) ?? 1,
    threads,
    devices: devices(o),
    variant: text(o, 'variant', 'variant'),
    out: output(o, outputType),
    outputType,
  };
  const lowMem = lowMemory(o);
  const distri: DistriArgs = {
    ranks: ranks ?? 1,
    threadsPerRank:
      int(o, 'threadsPerRank', 'threads-per-rank', 1) ?? Math.max(1, Math.floor(threads / (ranks ?? 1))),
    warmupSteps: int(o, 'warmupSteps', 'warmup-steps', 0) ?? DEFAULT_WARMUP,
    mode: oneOf(o, 'syncMode', 'sync-mode', SYNC_MODES) ?? 'corrected_async_gn',
    parallelism: oneOf(o, 'parallelism', 'parallelism', PARALLELISMS) ?? 'patch',
    splitBatch: o.splitBatch !== false,
    splitScheme: oneOf(o, 'splitScheme', 'split-scheme', SPLIT_SCHEMES) ?? 'row',
    splitVaeDecode: o.splitVaeDecode === true,
    lowMemory: lowMem.on,
    ...(lowMem.segmentBytes !== undefined ? { lowMemorySegmentBytes: lowMem.segmentBytes } : {}),
  };
  if (args.devices.length > 1 && args.devices.length !== distri.ranks) {
    throw new FlagError('device', `one device or ${distri.ranks} (one per rank)`, args.devices.join(','));
  }
  if (wantsDistri(o, ranks)) args.distri = distri;
  return args;
}
