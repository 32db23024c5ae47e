// One float32 copy of a model's weights in shared memory, every tensor page-aligned, for the sessions of
// several ranks in one process. ONNX Runtime memory-maps external data only at page-aligned offsets
// (safetensors offsets are arbitrary, and fp16 weights need widening), and otherwise copies every weight
// into every session: with a sync and an async graph per rank, that is two full copies per rank.
import { existsSync } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bytesToFloat32, SafetensorsFile } from './safetensors.js';
import { makeTempFolder } from './temp-folders.js';
import { type WeightEntry, WeightStore } from './weights.js';

const PAGE = 4096;

/** A serialisable description of an aligned weight file (what worker threads rebuild a store from). */
export interface AlignedWeightsIndex {
  source: string;
  file: string;
  entries: WeightEntry[];
}

export interface AlignedWeights {
  index: AlignedWeightsIndex;
  store: WeightStore;
  bytes: number;
  dispose(): Promise<void>;
}

/** Where the copy goes: RAM-backed /dev/shm where it exists, else the temporary folder. */
function sharedMemoryDir(): string {
  return existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
}

/** Rewrites a weight into another layout as it is copied (undefined: keep it as it is). */
export type WeightRelayout = (
  entry: WeightEntry,
  data: Float32Array,
) => { data: Float32Array; layout: string } | undefined;

/**
 * Writes every weight of `store` that `include` accepts, widened to float32, at a page-aligned offset of one
 * file in shared memory, each in the layout `relayout` picks. The file is deleted by dispose(); sessions that
 * mapped it keep their mapping until they are released.
 */
export async function alignWeights(
  store: WeightStore,
  options: { dir?: string; relayout?: WeightRelayout; include?: (entry: WeightEntry) => boolean } = {},
): Promise<AlignedWeights> {
  const dir = options.dir ?? sharedMemoryDir();
  const folder = await makeTempFolder(dir, 'distrifusion-weights');
  const file = join(folder, 'weights.f32');
  const entries: WeightEntry[] = [];
  const out = await open(file, 'w');
  let at = 0;
  try {
    const byFile = new Map<string, WeightEntry[]>();
    for (const key of store.keys()) {
      const e = store.entry(key);
      if (options.include && !options.include(e)) continue;
      byFile.set(e.file, [...(byFile.get(e.file) ?? []), e]);
    }
    for (const [path, list] of byFile) {
      const f = await SafetensorsFile.open(path);
      try {
        for (const e of list) {
          const bytes = await f.readRange(e.offset, e.byteLength);
          const plain = bytesToFloat32(bytes, e.dtype, `${path}: tensor '${e.key}'`);
          const moved = options.relayout?.(e, plain);
          const data = moved?.data ?? plain;
          at = Math.ceil(at / PAGE) * PAGE;
          await out.write(
            new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
            0,
            data.byteLength,
            at,
          );
          entries.push({
            key: e.key,
            dtype: 'F32',
            shape: e.shape,
            file,
            offset: at,
            byteLength: data.byteLength,
            ...(moved ? { layout: moved.layout } : {}),
          });
          at += data.byteLength;
        }
      } finally {
        await f.close();
      }
    }
    await out.close();
  } catch (err) {
    await out.close().catch(() => {});
    await rm(folder, { recursive: true, force: true });
    throw err;
  }
  const index = { source: store.source, file, entries };
  return {
    index,
    store: WeightStore.fromIndex(index.source, entries),
    bytes: at,
    dispose: () => rm(folder, { recursive: true, force: true }),
  };
}
