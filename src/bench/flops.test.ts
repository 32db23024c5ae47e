import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fixture, skipWithoutFixtures } from '../../test/helpers/fixtures.js';
import { GraphBuilder } from '../graph/builder.js';
import * as F from '../graph/functional.js';
import { readJson } from '../io/diffusers-folder.js';
import { buildUNetGraph } from '../models/unet-2d-condition.js';
import { parseUNetConfig, type UNetConfig } from '../models/unet-config.js';
import { countFlops } from './flops.js';
import { RecordingWeightStore } from './random-weights.js';

const zeros = (shape: number[]) => new Float32Array(shape.reduce((a, b) => a * b, 1));

test('conv: 2·N·Cout·Hout·Wout·(Cin/groups)·kh·kw, strides and groups included', () => {
  const b = new GraphBuilder('conv');
  const x = b.input('x', 'float32', [2, 6, 9, 9]);
  const w = b.constant(zeros([4, 6, 3, 3]), [4, 6, 3, 3]);
  const y = F.conv2d(x, w, null, { pads: [1, 1, 1, 1] });
  const wg = b.constant(zeros([6, 2, 3, 3]), [6, 2, 3, 3]);
  F.conv2d(x, wg, null, { stride: 2, groups: 3 }); // 9 → 4
  const c = countFlops(b);
  assert.deepEqual(y.shape, [2, 4, 9, 9]);
  assert.equal(c.byOp.Conv, 2 * 2 * 4 * 9 * 9 * 6 * 9 + 2 * 2 * 6 * 4 * 4 * 2 * 9);
  assert.equal(c.nodes.Conv, 2);
});

test('linear (Gemm) and broadcast MatMul: 2·M·N·K', () => {
  const b = new GraphBuilder('linear');
  const x = b.input('x', 'float32', [2, 5, 7]);
  F.linear(x, b.constant(zeros([4, 7]), [4, 7]), null);
  const a = b.input('a', 'float32', [3, 1, 4, 5]);
  const m = b.input('m', 'float32', [2, 5, 6]);
  F.matmul(a, m);
  const v = b.input('v', 'float32', [5]);
  F.matmul(a, b.constant(zeros([5, 1]), [5, 1]));
  F.matmul(F.reshape(v, [1, 5]), m);
  const c = countFlops(b);
  assert.equal(c.byOp.Gemm, 2 * 10 * 4 * 7);
  assert.equal(c.byOp.MatMul, 2 * 3 * 2 * 4 * 6 * 5 + 2 * 3 * 4 * 1 * 5 + 2 * 2 * 1 * 6 * 5);
});

test('nodes on constants only are not counted (ORT folds them at load)', () => {
  const b = new GraphBuilder('const');
  const w1 = b.constant(zeros([8, 8]), [8, 8]);
  const w2 = b.constant(zeros([8, 8]), [8, 8]);
  F.matmul(w1, w2);
  assert.equal(countFlops(b).total, 0);
});

test('attention: 2·2·B·heads·Sq·Sk·d, as MatMuls or as MultiHeadAttention', () => {
  const [batch, sq, sk, heads, d] = [2, 6, 5, 2, 4];
  const expected = 2 * 2 * batch * heads * sq * sk * d;
  for (const impl of ['matmul', 'mha'] as const) {
    const b = new GraphBuilder(`attn-${impl}`);
    const q = b.input('q', 'float32', [batch, sq, heads * d]);
    const k = b.input('k', 'float32', [batch, sk, heads * d]);
    const v = b.input('v', 'float32', [batch, sk, heads * d]);
    F.attention(q, k, v, heads, { impl });
    const c = countFlops(b);
    assert.equal(c.total, expected, impl);
    assert.ok(impl === 'mha' ? c.byOp.MultiHeadAttention : c.byOp.MatMul);
  }
});

/**
 * The UNet's FLOPs from its config alone, following diffusers' module structure; `invariant` is the part
 * computed from the text conditioning only (cross-attention K/V, SDXL's added embedding).
 */
function unetFlopsFromConfig(
  c: UNetConfig,
  batch: number,
  h: number,
  w: number,
  ctxLen: number,
): { total: number; invariant: number } {
  const c0 = c.blockOutChannels[0]!;
  const temb = 4 * c0;
  const lin = (rows: number, inF: number, outF: number) => 2 * rows * inF * outF;
  const conv = (hw: number, cin: number, cout: number, k: number) => 2 * batch * hw * cin * cout * k * k;
  const resnet = (hw: number, cin: number, cout: number) =>
    conv(hw, cin, cout, 3) +
    lin(batch, temb, cout) +
    conv(hw, cout, cout, 3) +
    (cin === cout ? 0 : conv(hw, cin, cout, 1));
  let invariant = 0;
  const transformer = (hw: number, ch: number, layers: number) => {
    const rows = batch * hw;
    invariant += layers * 2 * lin(batch * ctxLen, c.crossAttentionDim, ch);
    let f = 2 * lin(rows, ch, ch); // proj_in, proj_out (1x1 conv or linear alike)
    for (let i = 0; i < layers; i++) {
      f += lin(rows, ch, ch) + lin(rows, ch, 2 * ch) + 2 * (2 * batch * hw * hw * ch) + lin(rows, ch, ch); // attn1
      f +=
        lin(rows, ch, ch) +
        2 * lin(batch * ctxLen, c.crossAttentionDim, ch) +
        2 * (2 * batch * hw * ctxLen * ch) +
        lin(rows, ch, ch);
      f += lin(rows, ch, 8 * ch) + lin(rows, 4 * ch, ch); // GEGLU feed-forward
    }
    return f;
  };
  let f = lin(batch, c0, temb) + lin(batch, temb, temb);
  if (c.additionEmbed) {
    f += lin(batch, c.additionEmbed.inputDim, temb) + lin(batch, temb, temb);
    invariant += lin(batch, c.additionEmbed.inputDim, temb) + lin(batch, temb, temb);
  }
  const n = c.blockOutChannels.length;
  const sizes: Array<[number, number]> = [[h, w]];
  for (let i = 1; i < n; i++) sizes.push([Math.ceil(sizes[i - 1]![0] / 2), Math.ceil(sizes[i - 1]![1] / 2)]);
  const hw = (i: number) => sizes[i]![0] * sizes[i]![1];
  f += conv(hw(0), c.inChannels, c0, 3);
  const skips = [c0];
  let ch = c0;
  for (let i = 0; i < n; i++) {
    const out = c.blockOutChannels[i]!;
    for (let j = 0; j < c.layersPerBlock[i]!; j++) {
      f += resnet(hw(i), ch, out);
      ch = out;
      if (c.downBlockTypes[i] === 'CrossAttnDownBlock2D')
        f += transformer(hw(i), ch, c.transformerLayersPerBlock[i]!);
      skips.push(ch);
    }
    if (i < n - 1) {
      f += conv(hw(i + 1), ch, ch, 3);
      skips.push(ch);
    }
  }
  f += 2 * resnet(hw(n - 1), ch, ch) + transformer(hw(n - 1), ch, c.transformerLayersPerBlock[n - 1]!);
  for (let i = 0; i < n; i++) {
    const r = n - 1 - i;
    const out = c.blockOutChannels[r]!;
    for (let j = 0; j <= c.layersPerBlock[r]!; j++) {
      f += resnet(hw(r), ch + skips.pop()!, out);
      ch = out;
      if (c.upBlockTypes[i] === 'CrossAttnUpBlock2D')
        f += transformer(hw(r), ch, c.transformerLayersPerBlock[r]!);
    }
    if (i < n - 1) f += conv(hw(r - 1), ch, ch, 3);
  }
  return { total: f + conv(hw(0), c0, c.outChannels, 3), invariant };
}

for (const [name, path, batch, size] of [
  ['sdxl-tiny', fixture('sdxl-tiny', 'unet', 'config.json'), 2, 16],
  ['SD 1.5', fixture('configs', 'stable-diffusion-v1-5', 'unet', 'config.json'), 2, 64],
  ['SDXL', fixture('configs', 'stable-diffusion-xl-base-1.0', 'unet', 'config.json'), 1, 128],
] as const) {
  test(`${name} UNet: the graph's count equals one from the config`, {
    skip: skipWithoutFixtures,
  }, async () => {
    const config = parseUNetConfig(await readJson(path), path);
    const g = buildUNetGraph(config, new RecordingWeightStore(path), { batch, height: size, width: size });
    const counted = countFlops(g);
    const expected = unetFlopsFromConfig(config, batch, size, size, 77);
    assert.equal(counted.total, expected.total);
    assert.equal(counted.invariant, expected.invariant);
    assert.ok(expected.invariant > 0);
  });
}
