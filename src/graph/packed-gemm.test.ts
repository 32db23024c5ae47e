import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import ort from 'onnxruntime-node';
import { fixture, skipWithoutFixtures } from '../../test/helpers/fixtures.js';
import { SafetensorsFile } from '../io/safetensors.js';
import { numel } from '../io/tensor.js';
import { WeightStore } from '../io/weights.js';
import { attr, type OnnxGraph } from './onnx-model.js';
import { type PackedGemmWeights, packLinearWeights } from './packed-gemm.js';
import { createSession } from './session.js';

/** Resident mappings of a file (by inode) in this process: [file offset, resident kB]. */
function residentMappings(file: string): Array<[number, number]> {
  const inode = String(statSync(file).ino);
  const lines = readFileSync('/proc/self/smaps', 'utf8').split('\n');
  const out: Array<[number, number]> = [];
  for (let i = 0; i < lines.length; i++) {
    const f = lines[i]!.split(/\s+/);
    if (!/^[0-9a-f]+-[0-9a-f]+$/.test(f[0]!) || f[4] !== inode) continue;
    for (let j = i + 1; j < lines.length && !/^[0-9a-f]+-[0-9a-f]+ /.test(lines[j]!); j++) {
      const m = /^Rss:\s+(\d+) kB/.exec(lines[j]!);
      if (m && Number(m[1]) > 0) out.push([Number.parseInt(f[2]!, 16), Number(m[1])]);
    }
  }
  return out;
}

/** Every linear weight has a packed copy, and the unpacked weight beside it is the checkpoint's, widened. */
async function assertPackedAsCheckpoint(
  packed: PackedGemmWeights,
  linear: readonly string[],
  src: SafetensorsFile,
): Promise<void> {
  assert.deepEqual(packed.entries.map((e) => e.key).sort(), [...linear].sort());
  for (const e of packed.entries) {
    assert.ok(e.prepacked && e.prepacked.length > 0, `${e.key} has a packed copy`);
    const got = new Float32Array(e.byteLength / 4);
    const h = await open(e.file, 'r');
    await h.read(new Uint8Array(got.buffer), 0, e.byteLength, e.offset);
    await h.close();
    assert.deepEqual(got, (await src.readFloat32(e.key)).data, e.key);
  }
}

test('packed GEMM weights: ORT packs every linear weight once into files, and sessions map those packed copies', {
  skip: skipWithoutFixtures || (!existsSync('/proc/self/smaps') && 'no /proc/self/smaps'),
}, async () => {
  const file = fixture('sdxl-tiny', 'unet', 'diffusion_pytorch_model.safetensors');
  const store = await WeightStore.fromFiles(file, [file]);
  const linear = store.keys().filter((k) => store.entry(k).shape.length === 2);
  const packed = await packLinearWeights(store, (e) => e.shape.length === 2, tmpdir());
  try {
    const src = await SafetensorsFile.open(file);
    await assertPackedAsCheckpoint(packed, linear, src);

    // Two sessions multiply by the largest weight: both must map its packed copy, and compute x·Wᵀ.
    const w = packed.entries.reduce((a, b) => (b.byteLength > a.byteLength ? b : a));
    const [out, inF] = w.shape as [number, number];
    const rows = 33;
    const graph: OnnxGraph = {
      name: 'packed-gemm',
      nodes: [
        {
          opType: 'Gemm',
          domain: '',
          inputs: ['x', w.key],
          outputs: ['y'],
          attrs: { transB: attr.int(1) },
          name: 'g',
        },
      ],
      inputs: [{ name: 'x', dtype: 'float32', shape: [rows, inF] }],
      outputs: [{ name: 'y', dtype: 'float32', shape: [rows, out] }],
      initializers: [],
    };
    const x = Float32Array.from({ length: rows * inF }, (_, i) => Math.sin(i * 0.37));
    const weight = (await src.readFloat32(w.key)).data;
    await src.close();
    const want = new Float64Array(rows * out);
    for (let r = 0; r < rows; r++) {
      for (let o = 0; o < out; o++) {
        let s = 0;
        for (let k = 0; k < inF; k++) s += x[r * inF + k]! * weight[o * inF + k]!;
        want[r * out + o] = s;
      }
    }
    const before = residentMappings(w.file).length;
    const opts = { threads: 1, optimization: 'extended', prepacking: true, weights: 'mmap' } as const;
    const sessions = [
      await createSession(graph, [{ name: w.key, entry: w, dtype: 'float32' }], opts),
      await createSession(graph, [{ name: w.key, entry: w, dtype: 'float32' }], opts),
    ];
    try {
      for (const s of sessions) {
        const y = (await s.run({ x: new ort.Tensor('float32', x, [rows, inF]) })).y!.data as Float32Array;
        let num = 0;
        let den = 0;
        for (let i = 0; i < y.length; i++) {
          num += (y[i]! - want[i]!) ** 2;
          den += want[i]! ** 2;
        }
        assert.ok(Math.sqrt(num / den) < 1e-6, `rel L2 ${Math.sqrt(num / den)}`);
      }
      const blobStart = Math.min(...w.prepacked!.map((p) => Number(/\|(\d+);/.exec(p)![1])));
      const mapped = residentMappings(w.file).filter(([off]) => off >= Math.floor(blobStart / 4096) * 4096);
      assert.ok(
        mapped.length - before >= 2,
        `each session maps the packed copy from ${w.file} (resident mappings at or after ${blobStart}: ${JSON.stringify(mapped)})`,
      );
    } finally {
      for (const s of sessions) await s.release();
    }
  } finally {
    await packed.dispose();
  }
});

/** Bytes in this process's temporary plain weight copies (alignWeights folders) under `dir`. */
function plainCopyBytes(dir: string): number {
  let bytes = 0;
  for (const name of readdirSync(dir)) {
    if (!name.startsWith('distrifusion-weights-') || !name.includes(`.${process.pid}-`)) continue;
    try {
      for (const f of readdirSync(join(dir, name))) bytes += statSync(join(dir, name, f)).size;
    } catch {
      // Removed between the listing and the stat.
    }
  }
  return bytes;
}

test('packed GEMM weights: batches are widened one at a time, so the plain copy never holds every weight', {
  skip: skipWithoutFixtures || (!existsSync('/dev/shm') && 'no /dev/shm'),
}, async () => {
  const file = fixture('sdxl-tiny', 'unet', 'diffusion_pytorch_model.safetensors');
  const store = await WeightStore.fromFiles(file, [file]);
  const linear = store.keys().filter((k) => store.entry(k).shape.length === 2);
  const sizes = linear.map((k) => numel(store.entry(k).shape) * 4);
  const total = sizes.reduce((a, b) => a + b, 0);
  const batchBytes = 64 * 1024;
  assert.ok(total > 8 * batchBytes, `tiny SDXL has ${total} bytes of linear weights`);
  // Sample the plain copies while ORT packs (its session creation runs off the event loop).
  let peak = 0;
  const timer = setInterval(() => {
    peak = Math.max(peak, plainCopyBytes('/dev/shm'));
  }, 1);
  let packed: PackedGemmWeights | undefined;
  try {
    packed = await packLinearWeights(store, (e) => e.shape.length === 2, tmpdir(), batchBytes);
  } finally {
    clearInterval(timer);
  }
  try {
    assert.ok(new Set(packed.entries.map((e) => e.file)).size > 8, 'one packed file per batch');
    const src = await SafetensorsFile.open(file);
    await assertPackedAsCheckpoint(packed, linear, src);
    await src.close();
    // A batch holds at most batchBytes, or one weight above that; each weight starts on a page.
    const bound = Math.max(batchBytes, ...sizes) + 4096 * 64;
    assert.ok(peak > 0 && peak <= bound, `peak plain copy ${peak} bytes, bound ${bound}, all ${total}`);
    assert.equal(plainCopyBytes('/dev/shm'), 0, 'no plain copy is left behind');
  } finally {
    await packed.dispose();
  }
});
