import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fixture, skipWithoutFixtures } from '../../test/helpers/fixtures.js';
import { AutoencoderKL } from '../models/autoencoder-kl.js';
import { CLIPTextModel, CLIPTextModelWithProjection } from '../models/clip-text-model.js';
import { UNet2DConditionModel } from '../models/unet-2d-condition.js';
import { DistriSDXLPipeline } from './distri-pipelines.js';
import { loadComponents } from './load-components.js';
import { StableDiffusionXLPipeline } from './stable-diffusion-xl.js';

class Component {
  disposed = 0;
  async dispose(): Promise<void> {
    this.disposed++;
  }
}

test('loadComponents returns every value in order when all load', async () => {
  const a = new Component();
  const [x, y, z] = await loadComponents([Promise.resolve(a), Promise.resolve(2), Promise.resolve('c')]);
  assert.equal(x, a);
  assert.equal(y, 2);
  assert.equal(z, 'c');
  assert.equal(a.disposed, 0);
});

test('loadComponents disposes what loaded and rethrows the one failure', async () => {
  const a = new Component();
  const b = new Component();
  const failure = new Error('vae: missing config.json');
  // The failing load settles first: the others must still be awaited and disposed.
  const late = <T>(v: T) => new Promise<T>((r) => setTimeout(() => r(v), 20));
  await assert.rejects(
    loadComponents([late(a), Promise.reject(failure), late(b), late(7)]),
    (e) => e === failure,
  );
  assert.deepEqual([a.disposed, b.disposed], [1, 1]);
});

test('loadComponents names every failure, and a failing dispose does not hide them', async () => {
  const bad = { dispose: () => Promise.reject(new Error('dispose failed')) };
  await assert.rejects(
    loadComponents([
      Promise.reject(new Error('unet: no weights')),
      Promise.resolve(bad),
      Promise.reject(new Error('tokenizer: vocab.json is missing')),
    ]),
    (e: Error) => {
      assert.ok(e instanceof AggregateError);
      assert.equal(e.errors.length, 2);
      assert.equal(e.message, 'unet: no weights\ntokenizer: vocab.json is missing');
      return true;
    },
  );
});

test('SDXL fromPretrained disposes the loaded models when a tokenizer is missing', {
  skip: skipWithoutFixtures,
}, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'distrifusion-broken-sdxl-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  for (const part of [
    'model_index.json',
    'scheduler',
    'unet',
    'vae',
    'text_encoder',
    'text_encoder_2',
    'tokenizer',
  ]) {
    await symlink(fixture('sdxl-tiny', part), join(dir, part));
  }
  await mkdir(join(dir, 'tokenizer_2'));
  const unet = t.mock.method(UNet2DConditionModel.prototype, 'dispose');
  const vae = t.mock.method(AutoencoderKL.prototype, 'dispose');
  const text = t.mock.method(CLIPTextModel.prototype, 'dispose');
  const text2 = t.mock.method(CLIPTextModelWithProjection.prototype, 'dispose');
  await assert.rejects(StableDiffusionXLPipeline.fromPretrained(dir, { threads: 1 }), (e: Error) => {
    assert.match(e.message, /tokenizer_2: not a CLIP tokenizer folder: vocab\.json is missing/);
    return true;
  });
  assert.equal(unet.mock.callCount(), 1);
  assert.equal(vae.mock.callCount(), 1);
  assert.equal(text.mock.callCount(), 1);
  assert.equal(text2.mock.callCount(), 1);
});

test('DistriSDXLPipeline.fromPretrained checks its config before loading anything', async (t) => {
  const load = t.mock.method(StableDiffusionXLPipeline, 'fromPretrained');
  await assert.rejects(
    DistriSDXLPipeline.fromPretrained('/nonexistent', { height: 0, width: 64 }),
    (e: Error) => {
      assert.match(e.message, /DistriConfig\.height: expected a positive integer, got 0/);
      return true;
    },
  );
  assert.equal(load.mock.callCount(), 0);
});

test('DistriSDXLPipeline.fromPretrained keeps the config it checked, per-rank devices included', {
  skip: skipWithoutFixtures,
}, async () => {
  const distri = await DistriSDXLPipeline.fromPretrained(
    fixture('sdxl-tiny'),
    { height: 64, width: 64, ranks: 2, device: ['cpu', 'cuda:0'] },
    { threads: 1 },
  );
  try {
    assert.deepEqual(distri.config.devices, ['cpu', 'cuda:0']);
  } finally {
    await distri.dispose();
  }
});
