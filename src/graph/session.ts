import { existsSync, readdirSync } from 'node:fs';
import { link, open, realpath, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import ort from 'onnxruntime-node';
import { makeTempFolder } from '../io/temp-folders.js';
import type { WeightUse } from './builder.js';
import { type OnnxGraph, type OnnxInitializer, serializeModel } from './onnx-model.js';

export type ExecutionDevice = 'cpu' | 'webgpu' | `cuda:${number}` | 'cuda';

export interface EngineOptions {
  /** Intra-op threads per session (default: every core). */
  threads?: number;
  /** `cpu` (default), `cuda:N` or `webgpu`. */
  device?: string;
  /** ORT graph optimisation level (default 'all'). */
  optimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Let ORT prepack weights (faster GEMV, one private copy per session). Default true. */
  prepacking?: boolean;
  /**
   * How weights reach ORT. 'mmap' (default): the session opens the safetensors files itself (hard links
   * beside a temporary .onnx), so float32 weights stay memory-mapped and sessions in one process share
   * them when prepacking is off. 'memory': the byte ranges are read into buffers ORT copies. 'mmap' falls
   * back to 'memory' where no hard link can be made (another filesystem, read-only folder).
   */
  weights?: 'mmap' | 'memory';
  /**
   * ORT's per-session memory arena keeps each session's peak activations allocated between runs. That is
   * right for one big session, and ruinous for hundreds of segment sessions: CompiledGraph turns it off
   * for graphs of more than a few segments unless this says otherwise.
   */
  memoryArena?: boolean;
  /**
   * ORT's memory pattern: from the second run on, a session allocates all its activations as one planned
   * block, beside what the arena already holds from the first run. Default true. Measured on two SD 1.5
   * ranks at 512²: off saves 0.8 GB of steady memory at the same speed.
   */
  memoryPattern?: boolean;
  /**
   * Write ORT's per-node profile: each session, when released, writes `<profilePrefix>_<time>.json`
   * (Chrome trace events; `bench profile` sums them by operator).
   */
  profilePrefix?: string;
}

export function defaultThreads(): number {
  return availableParallelism();
}

/** Maps a device string to ORT execution providers, with a clear error for unknown or missing ones. */
export function executionProviders(
  device: string | undefined,
): ort.InferenceSession.ExecutionProviderConfig[] {
  const d = device ?? 'cpu';
  const available = ort.listSupportedBackends().map((b) => b.name);
  if (d === 'cpu') return ['cpu'];
  if (d === 'webgpu') {
    if (!available.includes('webgpu')) {
      throw new Error(
        `device 'webgpu': this onnxruntime-node build has no WebGPU provider (available: ${available.join(', ')})`,
      );
    }
    return [{ name: 'webgpu' }, 'cpu'];
  }
  const m = /^cuda(?::(\d+))?$/.exec(d);
  if (m) {
    if (!available.includes('cuda') || !cudaProviderInstalled()) {
      throw new Error(
        `device '${d}': the CUDA execution provider is not installed with onnxruntime-node (this project's .npmrc ` +
          'skips its download); install it with `ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node`',
      );
    }
    return [
      { name: 'cuda', deviceId: Number(m[1] ?? 0) } as ort.InferenceSession.ExecutionProviderConfig,
      'cpu',
    ];
  }
  throw new Error(`device '${d}': expected 'cpu', 'cuda', 'cuda:N' or 'webgpu'`);
}

/** How many sessions got their weights memory-mapped vs copied from buffers (for tests and benchmarks). */
export const weightLoadingStats = { mapped: 0, inMemory: 0 };

/** The CUDA provider is downloaded at install time, next to the binding, unless the install skipped it. */
function cudaProviderInstalled(): boolean {
  const binding = createRequire(import.meta.url).resolve('onnxruntime-node');
  const bin = join(dirname(binding), '..', 'bin');
  if (!existsSync(bin)) return false;
  const stack = [bin];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) stack.push(join(dir, e.name));
      else if (/onnxruntime_providers_cuda/.test(e.name)) return true;
    }
  }
  return false;
}

// Node Buffers top out at 4 GiB and ORT reads each external file in one piece: keep blobs well below that.
const BLOB_LIMIT = 1 << 30;
const ALIGN = 64;

/**
 * Reads the byte ranges of a segment's weights straight from their safetensors files into in-memory
 * external-data blobs (no conversion, nothing written to disk), and points the initializers at them.
 */
async function loadWeightBlobs(
  weights: readonly WeightUse[],
): Promise<{ initializers: OnnxInitializer[]; blobs: Array<{ path: string; data: Buffer }> }> {
  const layout: Array<{ w: WeightUse; blob: number; offset: number }> = [];
  const sizes: number[] = [];
  for (const w of weights) {
    const len = w.entry.byteLength;
    let b = sizes.length - 1;
    if (b < 0 || (sizes[b]! + len > BLOB_LIMIT && sizes[b]! > 0)) {
      sizes.push(0);
      b += 1;
    }
    const offset = sizes[b]!;
    layout.push({ w, blob: b, offset });
    sizes[b] = offset + Math.ceil(len / ALIGN) * ALIGN;
  }
  const blobs = sizes.map((s, i) => ({ path: `weights-${i}.bin`, data: Buffer.allocUnsafe(Math.max(s, 1)) }));
  const byFile = new Map<string, typeof layout>();
  for (const l of layout) {
    const list = byFile.get(l.w.entry.file) ?? [];
    list.push(l);
    byFile.set(l.w.entry.file, list);
  }
  for (const [file, list] of byFile) {
    const h = await open(file, 'r');
    try {
      for (const l of list) {
        const { bytesRead } = await h.read(
          blobs[l.blob]!.data,
          l.offset,
          l.w.entry.byteLength,
          l.w.entry.offset,
        );
        if (bytesRead !== l.w.entry.byteLength) {
          throw new Error(`${file}: truncated while reading tensor '${l.w.name}'`);
        }
      }
    } finally {
      await h.close();
    }
  }
  const initializers = layout.map(({ w, blob, offset }) => ({
    name: w.name,
    dtype: w.dtype,
    shape: w.entry.shape,
    external: { location: blobs[blob]!.path, offset, length: w.entry.byteLength },
  }));
  return { initializers, blobs };
}

/** A fresh folder on the same filesystem as `file` (hard links cannot cross filesystems). */
async function linkFolderFor(file: string): Promise<string | undefined> {
  for (const base of [tmpdir(), dirname(file)]) {
    const dir = await makeTempFolder(base, '.distrifusion-links').catch(() => undefined);
    if (!dir) continue;
    const ok = await link(file, join(dir, 'probe'))
      .then(() => true)
      .catch(() => false);
    if (ok) return dir;
    await rm(dir, { recursive: true, force: true });
  }
  return undefined;
}

/**
 * Writes the graph as an .onnx beside hard links to its weight files and opens it from the path: ORT maps
 * the weights itself. Returns undefined when the links cannot be made.
 */
async function createMappedSession(
  graph: OnnxGraph,
  weights: readonly WeightUse[],
  options: ort.InferenceSession.SessionOptions,
): Promise<ort.InferenceSession | undefined> {
  const files = [...new Set(await Promise.all(weights.map((w) => realpath(w.entry.file))))];
  const dir = await linkFolderFor(files[0]!);
  if (!dir) return undefined;
  try {
    const names = new Map<string, string>();
    for (const [i, f] of files.entries()) {
      const name = `w${i}.safetensors`;
      const linked = await link(f, join(dir, name))
        .then(() => true)
        .catch(() => false);
      if (!linked) return undefined;
      names.set(f, name);
    }
    const real = await Promise.all(weights.map((w) => realpath(w.entry.file)));
    const weightNames = new Set(weights.map((w) => w.name));
    const initializers: OnnxInitializer[] = weights.map((w, i) => ({
      name: w.name,
      dtype: w.dtype,
      shape: w.entry.shape,
      external: {
        location: names.get(real[i]!)!,
        offset: w.entry.offset,
        length: w.entry.byteLength,
        ...(w.entry.prepacked ? { prepacked: w.entry.prepacked } : {}),
      },
    }));
    const model = serializeModel({
      ...graph,
      initializers: [...graph.initializers.filter((x) => !weightNames.has(x.name)), ...initializers],
    });
    const path = join(dir, 'model.onnx');
    await writeFile(path, model);
    return await ort.InferenceSession.create(path, options);
  } finally {
    // The session holds its own mapping; the links and the .onnx are no longer needed.
    await rm(dir, { recursive: true, force: true });
  }
}

/** One ORT session for one graph, its weights read from the safetensors files they live in. */
export async function createSession(
  graph: OnnxGraph,
  weights: readonly WeightUse[],
  opts: EngineOptions = {},
): Promise<ort.InferenceSession> {
  const options = sessionOptions(opts);
  try {
    if ((opts.weights ?? 'mmap') === 'mmap' && weights.length > 0) {
      const mapped = await createMappedSession(graph, weights, options);
      if (mapped) {
        weightLoadingStats.mapped += 1;
        return mapped;
      }
    }
    const weightNames = new Set(weights.map((w) => w.name));
    const { initializers, blobs } = await loadWeightBlobs(weights);
    const model = serializeModel({
      ...graph,
      initializers: [...graph.initializers.filter((i) => !weightNames.has(i.name)), ...initializers],
    });
    if (blobs.length > 0) (options as { externalData?: unknown }).externalData = blobs;
    const session = await ort.InferenceSession.create(model, options);
    if (weights.length > 0) weightLoadingStats.inMemory += 1;
    return session;
  } catch (e) {
    throw new Error(
      `creating an ORT session for graph '${graph.name}' on ${opts.device ?? 'cpu'}: ${(e as Error).message}`,
    );
  }
}

function sessionOptions(opts: EngineOptions): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: executionProviders(opts.device),
    intraOpNumThreads: opts.threads ?? defaultThreads(),
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: opts.optimization ?? 'all',
    logSeverityLevel: 3,
    ...(opts.profilePrefix ? { enableProfiling: true, profileFilePrefix: opts.profilePrefix } : {}),
    ...(opts.memoryArena === false ? { enableCpuMemArena: false } : {}),
    ...(opts.memoryPattern === false ? { enableMemPattern: false } : {}),
    ...(opts.prepacking === false ? { extra: { session: { disable_prepacking: '1' } } } : {}),
  };
}
