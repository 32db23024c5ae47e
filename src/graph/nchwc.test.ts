import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { compare } from '../../test/helpers/fixtures.js';
import { alignWeights } from '../io/aligned-weights.js';
import { writeSafetensors } from '../io/safetensors.js';
import { WeightStore } from '../io/weights.js';
import { GraphBuilder } from './builder.js';
import * as F from './functional.js';
import { nchwcBlockSize, nchwcRelayout } from './nchwc.js';
import { NCHWC_DOMAIN } from './onnx-model.js';
import { CompiledGraph } from './runner.js';

const cpuFlags = (() => {
  try {
    return readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return '';
  }
})();

test('the NCHWc block size probe finds what MLAS picks for this CPU', async () => {
  const block = await nchwcBlockSize();
  if (/\bavx512f\b/.test(cpuFlags)) assert.equal(block, 16);
  else if (/\bavx2\b/.test(cpuFlags)) assert.equal(block, 8);
  else assert.ok(block === 0 || block === 4 || block === 8 || block === 16, `block ${block}`);
});

interface ConvCase {
  key: string;
  cin: number;
  cout: number;
  k: number;
  stride: number;
  pads: [number, number, number, number];
  bias: boolean;
}

// The shapes a patch rank runs: same-size 3x3, a halo band padded only at the sides, a stride-2
// downsample, a 1x1 projection without bias.
const CASES: ConvCase[] = [
  { key: 'same', cin: 16, cout: 32, k: 3, stride: 1, pads: [1, 1, 1, 1], bias: true },
  { key: 'halo', cin: 32, cout: 16, k: 3, stride: 1, pads: [0, 1, 0, 1], bias: true },
  { key: 'down', cin: 16, cout: 16, k: 3, stride: 2, pads: [1, 1, 1, 1], bias: true },
  { key: 'proj', cin: 48, cout: 48, k: 1, stride: 1, pads: [0, 0, 0, 0], bias: false },
];

function conv64(x: Float32Array, shape: number[], w: Float32Array, b: Float32Array | null, c: ConvCase) {
  const [n, ci, h, wd] = shape as [number, number, number, number];
  const oh = Math.floor((h + c.pads[0] + c.pads[2] - c.k) / c.stride) + 1;
  const ow = Math.floor((wd + c.pads[1] + c.pads[3] - c.k) / c.stride) + 1;
  const out = new Float64Array(n * c.cout * oh * ow);
  for (let bn = 0; bn < n; bn++)
    for (let o = 0; o < c.cout; o++)
      for (let y = 0; y < oh; y++)
        for (let xx = 0; xx < ow; xx++) {
          let s = b ? b[o]! : 0;
          for (let i = 0; i < ci; i++)
            for (let dy = 0; dy < c.k; dy++)
              for (let dx = 0; dx < c.k; dx++) {
                const sy = y * c.stride + dy - c.pads[0];
                const sx = xx * c.stride + dx - c.pads[1];
                if (sy < 0 || sy >= h || sx < 0 || sx >= wd) continue;
                s += w[((o * ci + i) * c.k + dy) * c.k + dx]! * x[((bn * ci + i) * h + sy) * wd + sx]!;
              }
          out[((bn * c.cout + o) * oh + y) * ow + xx] = s;
        }
  return { out, shape: [n, c.cout, oh, ow] };
}

test('conv filters stored reordered for NCHWc run in the NCHWc kernel and equal a float64 convolution', async () => {
  const block = await nchwcBlockSize();
  assert.ok(block > 0, 'this ORT build has no NCHWc kernel');
  const dir = await mkdtemp(join(tmpdir(), 'nchwc-test-'));
  try {
    const rnd = (n: number, seed: number) =>
      Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed) * 0.5);
    const tensors: Record<string, { data: Float32Array; shape: number[] }> = {};
    for (const [j, c] of CASES.entries()) {
      tensors[`${c.key}.weight`] = {
        data: rnd(c.cout * c.cin * c.k * c.k, j),
        shape: [c.cout, c.cin, c.k, c.k],
      };
      if (c.bias) tensors[`${c.key}.bias`] = { data: rnd(c.cout, 10 + j), shape: [c.cout] };
    }
    const file = join(dir, 'w.safetensors');
    await writeSafetensors(file, tensors);
    const store = await WeightStore.fromFiles(file, [file]);
    const aligned = await alignWeights(store, { dir, relayout: nchwcRelayout(block) });
    try {
      for (const c of CASES) {
        assert.equal(aligned.store.entry(`${c.key}.weight`).layout, `OIHWBiBo${block}`, c.key);
        const b = new GraphBuilder(`nchwc-${c.key}`, { weights: aligned.store });
        const shape = [2, c.cin, 9, 7];
        const x = b.input('x', 'float32', shape);
        const y = b.scope(c.key, () =>
          F.conv2d(
            x,
            b.param('weight', [c.cout, c.cin, c.k, c.k]),
            c.bias ? b.param('bias', [c.cout]) : null,
            { stride: c.stride, pads: c.pads },
          ),
        );
        b.output('y', y);
        const domains = b.items.flatMap((it) =>
          'opType' in it && it.opType !== 'Identity' ? [`${it.domain}:${it.opType}`] : [],
        );
        assert.deepEqual(domains, [
          `${NCHWC_DOMAIN}:ReorderInput`,
          `${NCHWC_DOMAIN}:Conv`,
          `${NCHWC_DOMAIN}:ReorderOutput`,
        ]);
        const g = await CompiledGraph.fromBuilder(b, {
          threads: 1,
          optimization: 'extended',
          prepacking: false,
        });
        try {
          const xs = rnd(
            shape.reduce((p, q) => p * q, 1),
            99,
          );
          const got = await g.run({ x: { data: xs, shape } });
          const want = conv64(
            xs,
            shape,
            tensors[`${c.key}.weight`]!.data,
            c.bias ? tensors[`${c.key}.bias`]!.data : null,
            c,
          );
          assert.deepEqual(got.y!.shape, want.shape, c.key);
          const r = compare(got.y!.data as Float32Array, want.out);
          assert.ok(r.relL2 < 1e-6, `${c.key}: rel L2 ${r.relL2}`);
        } finally {
          await g.dispose();
        }
      }
      // Filters without whole channel blocks (the UNet's conv_in and conv_out) keep their plain layout.
      const plain = { ...store.entry('same.weight') };
      for (const s of [
        [16, 4, 3, 3],
        [4, 16, 3, 3],
        [16, 16],
      ]) {
        const n = s.reduce((p, q) => p * q, 1);
        assert.equal(nchwcRelayout(block)({ ...plain, shape: s }, new Float32Array(n)), undefined, `[${s}]`);
      }
    } finally {
      await aligned.dispose();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
