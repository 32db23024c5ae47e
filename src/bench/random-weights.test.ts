import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fixture, skipWithoutFixtures } from '../../test/helpers/fixtures.js';
import { SafetensorsFile } from '../io/safetensors.js';
import { AutoencoderKL } from '../models/autoencoder-kl.js';
import { UNet2DConditionModel } from '../models/unet-2d-condition.js';
import { createRandomModel, createRandomUNet, randomTensor } from './random-weights.js';

const tinyConfig = fixture('sdxl-tiny', 'unet', 'config.json');

function stats(data: Float32Array): { finite: boolean; std: number } {
  let s = 0;
  let s2 = 0;
  let finite = true;
  for (const v of data) {
    if (!Number.isFinite(v)) finite = false;
    s += v;
    s2 += v * v;
  }
  const mean = s / data.length;
  return { finite, std: Math.sqrt(s2 / data.length - mean * mean) };
}

test('random tensors: variance 1/fan_in, norm scales 1, seeded by key', () => {
  const shapes = new Map([
    ['a.conv.weight', [64, 32, 3, 3]],
    ['a.conv.bias', [64]],
    ['a.norm.weight', [32]],
    ['a.norm.bias', [32]],
  ]);
  const w = randomTensor('a.conv.weight', [64, 32, 3, 3], shapes, 7);
  assert.ok(Math.abs(stats(w).std * Math.sqrt(32 * 9) - 1) < 0.03);
  assert.deepEqual(randomTensor('a.conv.weight', [64, 32, 3, 3], shapes, 7), w);
  assert.notDeepEqual(randomTensor('a.conv.weight', [64, 32, 3, 3], shapes, 8), w);
  const bias = randomTensor('a.conv.bias', [64], shapes, 7);
  assert.ok(bias.every((v) => Math.abs(v) <= 1 / Math.sqrt(32 * 9)) && bias.some((v) => v !== 0));
  assert.ok(randomTensor('a.norm.weight', [32], shapes, 7).every((v) => v === 1));
  assert.ok(randomTensor('a.norm.bias', [32], shapes, 7).every((v) => v === 0));
});

for (const dtype of ['F32', 'F16'] as const) {
  test(`a random ${dtype} UNet folder loads with fromPretrained and runs`, {
    skip: skipWithoutFixtures,
  }, async () => {
    const model = await createRandomUNet(tinyConfig, { dtype, seed: 3 });
    try {
      const file = await SafetensorsFile.open(join(model.dir, 'diffusion_pytorch_model.safetensors'));
      assert.equal(file.fileSize - 8 - file.headerLength, model.bytes);
      assert.ok([...file.entries.values()].every((e) => e.dtype === dtype));
      await file.close();
      const unet = await UNet2DConditionModel.fromPretrained(model.dir, { threads: 1 });
      const [h, w] = [8, 8];
      const out = await unet.forward({
        sample: { data: new Float32Array(2 * 4 * h * w).map((_, i) => Math.sin(i)), shape: [2, 4, h, w] },
        timestep: 500,
        encoderHiddenStates: { data: new Float32Array(2 * 77 * 64).fill(0.1), shape: [2, 77, 64] },
        textEmbeds: { data: new Float32Array(2 * 24).fill(0.2), shape: [2, 24] },
        timeIds: { data: Float32Array.from([64, 64, 0, 0, 64, 64, 64, 64, 0, 0, 64, 64]), shape: [2, 6] },
      });
      await unet.dispose();
      const s = stats(out.data);
      assert.ok(s.finite, 'output is finite');
      assert.ok(s.std > 1e-3 && s.std < 1e3, `output std ${s.std} is neither vanishing nor exploding`);
    } finally {
      await model.cleanup();
    }
    assert.equal(existsSync(model.dir), false, 'cleanup removes the folder');
  });
}

test('a cached random UNet is reused and byte-identical for the same seed', {
  skip: skipWithoutFixtures,
}, async () => {
  const cacheDir = await mkdtemp(join(tmpdir(), 'distrifusion-cache-test-'));
  try {
    const a = await createRandomUNet(tinyConfig, { cacheDir, seed: 1 });
    const b = await createRandomUNet(tinyConfig, { cacheDir, seed: 1 });
    assert.equal(a.reused, false);
    assert.equal(b.reused, true);
    assert.equal(a.dir, b.dir);
    const other = await createRandomUNet(tinyConfig, { seed: 1 });
    const name = 'diffusion_pytorch_model.safetensors';
    assert.deepEqual(await readFile(join(other.dir, name)), await readFile(join(a.dir, name)));
    await other.cleanup();
  } finally {
    await rm(cacheDir, { recursive: true, force: true });
  }
});

test("a random VAE has exactly the real checkpoint's keys and shapes (sdxl-tiny), and its decode is finite", {
  skip: skipWithoutFixtures,
}, async () => {
  const real = await SafetensorsFile.open(fixture('sdxl-tiny', 'vae', 'diffusion_pytorch_model.safetensors'));
  const realShapes = new Map([...real.entries].map(([k, e]) => [k, [...e.shape]]));
  await real.close();
  const model = await createRandomModel('vae', fixture('sdxl-tiny', 'vae', 'config.json'), { seed: 2 });
  try {
    const file = await SafetensorsFile.open(join(model.dir, 'diffusion_pytorch_model.safetensors'));
    const shapes = new Map([...file.entries].map(([k, e]) => [k, [...e.shape]]));
    await file.close();
    assert.deepEqual(new Map([...shapes].sort()), new Map([...realShapes].sort()));
    const vae = await AutoencoderKL.fromPretrained(model.dir, { threads: 1 });
    const out = await vae.decode({
      data: new Float32Array(4 * 6 * 5).map((_, i) => Math.cos(i)),
      shape: [1, 4, 6, 5],
    });
    await vae.dispose();
    assert.deepEqual(out.shape, [1, 3, 24, 20]);
    assert.ok(stats(out.data).finite);
  } finally {
    await model.cleanup();
  }
});
