// ORT packs a Gemm's constant weight into MLAS's panel layout once per session ("prepacking"); without it
// every call repacks the weight (measured, one thread, 2048x1280x5120: 474 ms packed vs 517 ms unpacked).
// A session's packed copy is private, which is why ranks that share one weight copy ran unpacked. But ORT
// can save packed copies beside a model (session.save_external_prepacked_constant_initializers) and maps
// them, read-only, when a model names them: so every linear weight is packed once, by ORT itself, into files
// that all sessions of all ranks map.
import { readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import ort from 'onnxruntime-node';
import { alignWeights } from '../io/aligned-weights.js';
import { makeTempFolder } from '../io/temp-folders.js';
import { numel } from '../io/tensor.js';
import type { WeightEntry, WeightStore } from '../io/weights.js';
import {
  attr,
  type OnnxGraph,
  type OnnxNode,
  readExternalInitializers,
  serializeModel,
} from './onnx-model.js';

/** The weights `linear()` multiplies by (Gemm, transB): float32 [out, in], stored plainly. */
export function gemmPackable(e: WeightEntry): boolean {
  return e.shape.length === 2 && e.dtype === 'F32' && e.layout === undefined;
}

export interface PackedGemmWeights {
  /** One entry per packed weight: the weight and its packed copy, in a file ORT wrote. */
  entries: WeightEntry[];
  dispose(): Promise<void>;
}

// One packing session per batch: a session holds every packed copy of its batch on the heap until saved.
const BATCH_BYTES = 512 * 2 ** 20;

/** Groups weights into batches of at most `limit` bytes once widened to float32 (or one larger weight). */
function batchesOf(entries: readonly WeightEntry[], limit: number): WeightEntry[][] {
  const batches: WeightEntry[][] = [];
  let size = 0;
  for (const e of entries) {
    const bytes = numel(e.shape) * 4;
    const last = batches.at(-1);
    if (!last || size + bytes > limit) {
      batches.push([e]);
      size = bytes;
    } else {
      last.push(e);
      size += bytes;
    }
  }
  return batches;
}

/**
 * The weights of `store` that `include` picks, widened to float32 and packed by ORT the way a Gemm with
 * transB packs them, each written with its packed copy into files in a new folder under `dir`.
 * Each batch is widened into its own temporary copy in shared memory, dropped once packed: one copy of every
 * linear weight (9 GB for SDXL, unswappable) took a shared SDXL launch to 9 GiB of used memory, against 1.4.
 */
export async function packLinearWeights(
  store: WeightStore,
  include: (e: WeightEntry) => boolean,
  dir: string,
  batchBytes = BATCH_BYTES,
): Promise<PackedGemmWeights> {
  const picked = store
    .keys()
    .map((k) => store.entry(k))
    .filter(include);
  const folder = await makeTempFolder(dir, 'distrifusion-packed');
  try {
    const out: WeightEntry[] = [];
    for (const [b, batch] of batchesOf(picked, batchBytes).entries()) {
      const keys = new Set(batch.map((e) => e.key));
      const plain = await alignWeights(store, { include: (e) => keys.has(e.key) });
      try {
        for (const e of plain.index.entries) {
          if (!gemmPackable(e)) {
            throw new Error(
              `packing '${e.key}' for Gemm: expected a plain float32 [out, in] weight, found ${e.dtype} ` +
                `[${e.shape.join(', ')}]${e.layout ? ` in layout ${e.layout}` : ''}`,
            );
          }
        }
        out.push(...(await packBatch(plain.index.entries, folder, `pack-${b}`)));
      } finally {
        await plain.dispose();
      }
    }
    return { entries: out, dispose: () => rm(folder, { recursive: true, force: true }) };
  } catch (e) {
    await rm(folder, { recursive: true, force: true });
    throw e;
  }
}

async function packBatch(
  batch: readonly WeightEntry[],
  folder: string,
  name: string,
): Promise<WeightEntry[]> {
  // The model that names the weights lives beside their file (external data must be in the model's folder).
  const source = batch[0]!.file;
  const input = join(dirname(source), `${name}-${process.pid}.onnx`);
  const nodes: OnnxNode[] = batch.map((e, i) => ({
    opType: 'Gemm',
    domain: '',
    inputs: [`x${i}`, e.key],
    outputs: [`y${i}`],
    attrs: { transB: attr.int(1) },
    name: `gemm${i}`,
  }));
  const graph: OnnxGraph = {
    name,
    nodes,
    inputs: batch.map((e, i) => ({ name: `x${i}`, dtype: 'float32', shape: [1, e.shape[1]!] })),
    outputs: batch.map((e, i) => ({ name: `y${i}`, dtype: 'float32', shape: [1, e.shape[0]!] })),
    initializers: batch.map((e) => ({
      name: e.key,
      dtype: 'float32',
      shape: e.shape,
      external: { location: basename(source), offset: e.offset, length: e.byteLength },
    })),
  };
  const saved = join(folder, `${name}.onnx`);
  const dataFile = `${name}.data`;
  await writeFile(input, serializeModel(graph));
  try {
    const session = await ort.InferenceSession.create(input, {
      executionProviders: ['cpu'],
      intraOpNumThreads: 1,
      graphOptimizationLevel: 'disabled',
      logSeverityLevel: 3,
      optimizedModelFilePath: saved,
      extra: {
        session: {
          optimized_model_external_initializers_file_name: dataFile,
          optimized_model_external_initializers_min_size_in_bytes: '1024',
          save_external_prepacked_constant_initializers: '1',
        },
      },
    });
    await session.release();
  } finally {
    await rm(input, { force: true });
  }
  const written = new Map(
    readExternalInitializers(await readFile(saved), saved).map((t) => [t.name, t.external] as const),
  );
  await rm(saved, { force: true });
  return batch.map((e): WeightEntry => {
    const ext = written.get(e.key);
    const prepacked = [...(ext?.entries() ?? [])]
      .filter(([k]) => k.startsWith('prepacked_'))
      .map(([, v]) => v);
    if (!ext || ext.get('location') !== dataFile || prepacked.length === 0) {
      throw new Error(
        `${saved}: ORT did not save '${e.key}' with a packed copy in ${dataFile} ` +
          `(found location ${ext?.get('location') ?? 'none'}, ${prepacked.length} packed copies)`,
      );
    }
    const offset = Number(ext.get('offset') ?? 0);
    const length = Number(ext.get('length'));
    if (length !== e.byteLength) {
      throw new Error(`${saved}: '${e.key}' saved with ${length} bytes, expected ${e.byteLength}`);
    }
    return { ...e, file: join(folder, dataFile), offset, prepacked };
  });
}
