// A UNet or VAE folder (config.json + diffusion_pytorch_model.safetensors) with seeded random weights, for
// benchmarks of real model sizes without downloading checkpoints. The key list comes from building the graph with a
// recording weight store, so every key the model asks for exists; tensors are generated and written one at a
// time (SDXL is 10.3 GB in F32).
import { existsSync } from 'node:fs';
import { mkdir, open, rm, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type JsonObject, readJson } from '../io/diffusers-folder.js';
import { float32ToHalfArray } from '../io/half.js';
import { makeTempFolder } from '../io/temp-folders.js';
import { formatShape } from '../io/tensor.js';
import { type WeightEntry, WeightStore } from '../io/weights.js';
import { buildVaeDecoderGraph, buildVaeEncoderGraph, parseVaeConfig } from '../models/autoencoder-kl.js';
import { buildUNetGraph } from '../models/unet-2d-condition.js';
import { parseUNetConfig } from '../models/unet-config.js';
import { registerTempDir, unregisterTempDir } from './temp-dirs.js';

export type RandomWeightDtype = 'F32' | 'F16';

const WEIGHTS_FILE = 'diffusion_pytorch_model.safetensors';
const COMPLETE_MARKER = '.complete';

/** A WeightStore that has every key: it records the shapes a model asks for and hands back fake entries. */
export class RecordingWeightStore extends WeightStore {
  readonly shapes = new Map<string, number[]>();

  constructor(source: string) {
    super(source, new Map());
  }

  // Optional weights are left out: a model that probes for them builds the same graph from the written file.
  override has(): boolean {
    return false;
  }

  override keys(): string[] {
    return [...this.shapes.keys()];
  }

  override get(key: string, expectedShape: readonly number[]): WeightEntry {
    const prev = this.shapes.get(key);
    if (prev && formatShape(prev) !== formatShape(expectedShape)) {
      throw new Error(
        `${this.source}: '${key}' asked for as ${formatShape(prev)} and as ${formatShape(expectedShape)}`,
      );
    }
    this.shapes.set(key, [...expectedShape]);
    const n = expectedShape.reduce((a, b) => a * b, 1);
    return { key, dtype: 'F32', shape: [...expectedShape], file: this.source, offset: 0, byteLength: 4 * n };
  }
}

/** Every weight a UNet config implies, by checkpoint key, with its shape. */
export function unetWeightShapes(
  configJson: Record<string, unknown>,
  configPath: string,
): Map<string, number[]> {
  const config = parseUNetConfig(configJson, configPath);
  const store = new RecordingWeightStore(configPath);
  const minimal = 2 ** (config.downBlockTypes.length - 1);
  buildUNetGraph(config, store, { batch: 1, height: minimal, width: minimal });
  return store.shapes;
}

/** Every weight an AutoencoderKL config implies (encoder and decoder: loading checks both). */
export function vaeWeightShapes(
  configJson: Record<string, unknown>,
  configPath: string,
): Map<string, number[]> {
  const config = parseVaeConfig(configJson, configPath);
  const store = new RecordingWeightStore(configPath);
  const f = 2 ** (config.blockOutChannels.length - 1);
  buildVaeDecoderGraph(config, store, { batch: 1, height: 1, width: 1 });
  buildVaeEncoderGraph(config, store, { batch: 1, height: f, width: f });
  return store.shapes;
}

export type RandomModelKind = 'unet' | 'vae';

const WEIGHT_SHAPES: Record<RandomModelKind, typeof unetWeightShapes> = {
  unet: unetWeightShapes,
  vae: vaeWeightShapes,
};

/** FNV-1a of a key, mixed with the seed: each tensor's values depend only on (seed, key). */
function tensorSeed(seed: number, key: string): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** mulberry32 uniform values in [-bound, bound). */
function fillUniform(out: Float32Array, seed: number, bound: number): void {
  let s = seed | 0;
  for (let i = 0; i < out.length; i++) {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    out[i] = (((t ^ (t >>> 14)) >>> 0) / 2147483648 - 1) * bound;
  }
}

/**
 * Values for one tensor: matrices and kernels uniform with variance 1/fan_in (activations keep their scale),
 * their biases as torch initialises them (±1/sqrt(fan_in)), norm scales 1 and norm shifts 0.
 */
export function randomTensor(
  key: string,
  shape: readonly number[],
  shapes: ReadonlyMap<string, readonly number[]>,
  seed: number,
): Float32Array {
  const out = new Float32Array(shape.reduce((a, b) => a * b, 1));
  if (shape.length >= 2) {
    const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
    fillUniform(out, tensorSeed(seed, key), Math.sqrt(3 / fanIn));
    return out;
  }
  const owner = shapes.get(key.replace(/\.(weight|bias)$/, '.weight'));
  if (owner && owner.length >= 2) {
    fillUniform(out, tensorSeed(seed, key), 1 / Math.sqrt(owner.slice(1).reduce((a, b) => a * b, 1)));
  } else if (key.endsWith('.weight')) {
    out.fill(1);
  }
  return out;
}

export interface WriteRandomOptions {
  dtype?: RandomWeightDtype;
  seed?: number;
  /** Called after each tensor with the bytes written so far and the total. */
  onProgress?: (done: number, total: number) => void;
}

/** Bytes of a safetensors file holding these shapes in `dtype` (header excluded). */
export function randomWeightBytes(
  shapes: ReadonlyMap<string, readonly number[]>,
  dtype: RandomWeightDtype,
): number {
  let n = 0;
  for (const s of shapes.values()) n += s.reduce((a, b) => a * b, 1) * (dtype === 'F32' ? 4 : 2);
  return n;
}

/** Writes a safetensors file tensor by tensor (keys sorted, data contiguous, header padded to 8 bytes). */
export async function writeRandomSafetensors(
  path: string,
  shapes: ReadonlyMap<string, readonly number[]>,
  options: WriteRandomOptions = {},
): Promise<void> {
  const dtype = options.dtype ?? 'F32';
  const seed = options.seed ?? 0;
  const size = dtype === 'F32' ? 4 : 2;
  const keys = [...shapes.keys()].sort();
  const header: Record<string, unknown> = {
    __metadata__: { format: 'pt', generator: `distrifusion bench, seed ${seed}` },
  };
  let offset = 0;
  for (const k of keys) {
    const bytes = shapes.get(k)!.reduce((a, b) => a * b, 1) * size;
    header[k] = { dtype, shape: shapes.get(k), data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const handle = await open(path, 'w');
  try {
    await handle.write(len);
    await handle.write(Buffer.from(json, 'utf8'));
    let done = 0;
    for (const k of keys) {
      const values = randomTensor(k, shapes.get(k)!, shapes, seed);
      const data = dtype === 'F32' ? values : float32ToHalfArray(values);
      await handle.write(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      done += data.byteLength;
      options.onProgress?.(done, offset);
    }
  } finally {
    await handle.close();
  }
}

export interface RandomModelOptions extends WriteRandomOptions {
  /** Keep the folder here, keyed by config, dtype and seed, and reuse it next time (default: a temp dir removed at exit). */
  cacheDir?: string;
}

export interface RandomModel {
  dir: string;
  /** Bytes of tensor data. */
  bytes: number;
  params: number;
  /** Whether an existing cached folder was reused. */
  reused: boolean;
  /** Removes a temporary folder (cached ones stay). */
  cleanup(): Promise<void>;
}

async function checkDiskSpace(dir: string, need: number, what: string): Promise<void> {
  const s = await statfs(dir);
  const free = s.bavail * s.bsize;
  const margin = 256 * 2 ** 20;
  if (free < need + margin) {
    const gb = (n: number) => `${(n / 1e9).toFixed(2)} GB`;
    throw new Error(
      `${what}: needs ${gb(need)} of disk in ${dir}, but only ${gb(free)} is free (set TMPDIR or --weights-cache elsewhere)`,
    );
  }
}

/** A config.json's content, and where it came from (for messages). */
export interface ModelConfigSource {
  json: JsonObject;
  label: string;
}

/** Writes a UNet folder with random weights for a diffusers UNet config (a config.json path, or its content). */
export function createRandomUNet(
  config: string | ModelConfigSource,
  options: RandomModelOptions = {},
): Promise<RandomModel> {
  return createRandomModel('unet', config, options);
}

/** Writes a UNet or VAE folder with random weights for its diffusers config. */
export async function createRandomModel(
  kind: RandomModelKind,
  config: string | ModelConfigSource,
  options: RandomModelOptions = {},
): Promise<RandomModel> {
  const { json, label } =
    typeof config === 'string' ? { json: await readJson(config), label: config } : config;
  const shapes = WEIGHT_SHAPES[kind](json, label);
  const dtype = options.dtype ?? 'F32';
  const seed = options.seed ?? 0;
  const bytes = randomWeightBytes(shapes, dtype);
  const params = bytes / (dtype === 'F32' ? 4 : 2);
  const text = `${JSON.stringify(json, null, 2)}\n`;
  const what = `random weights for ${label}`;
  let dir: string;
  if (options.cacheDir) {
    dir = join(
      options.cacheDir,
      `${kind}-${tensorSeed(0, text).toString(16)}-${dtype.toLowerCase()}-s${seed}`,
    );
    if (existsSync(join(dir, COMPLETE_MARKER)))
      return { dir, bytes, params, reused: true, cleanup: async () => {} };
    await mkdir(dir, { recursive: true });
    await checkDiskSpace(dir, bytes, what);
  } else {
    const parent = tmpdir();
    await checkDiskSpace(parent, bytes, what);
    dir = await makeTempFolder(parent, 'distrifusion-bench');
    registerTempDir(dir);
  }
  const cleanup = async (): Promise<void> => {
    if (options.cacheDir) return;
    await rm(dir, { recursive: true, force: true });
    unregisterTempDir(dir);
  };
  try {
    await writeFile(join(dir, 'config.json'), text);
    await writeRandomSafetensors(join(dir, WEIGHTS_FILE), shapes, options);
    if (options.cacheDir) await writeFile(join(dir, COMPLETE_MARKER), `${bytes}\n`);
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    unregisterTempDir(dir);
    throw e;
  }
  return { dir, bytes, params, reused: false, cleanup };
}
