import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  asFloat,
  assertClose,
  fixture,
  loadFixture,
  skipWithoutFixtures,
} from '../../test/helpers/fixtures.js';
import { readJson } from '../io/diffusers-folder.js';
import { AutoencoderKL, parseVaeConfig } from './autoencoder-kl.js';

const TOL = { relL2: 1e-4, maxAbsOverMaxRef: 1e-4 };

test('vae-tiny: decode and encode match diffusers', { skip: skipWithoutFixtures }, async (t) => {
  const vae = await AutoencoderKL.fromPretrained(fixture('sdxl-tiny', 'vae'), { threads: 1 });
  assert.equal(vae.scaleFactor, 4);
  assert.equal(vae.config.scalingFactor, 0.13025);
  const io = await loadFixture('vae-tiny', 'io.safetensors');
  assertClose(t, 'decoded', await vae.decode(asFloat(io.latents)), asFloat(io['out.decoded']), TOL);
  const dist = await vae.encodeDistribution(asFloat(io.image));
  assertClose(t, 'latent mean', dist.mean, asFloat(io['out.latent_dist.mean']), TOL);
  assertClose(t, 'latent logvar', dist.logvar, asFloat(io['out.latent_dist.logvar']), TOL);
  assertClose(t, 'latent std', dist.std, asFloat(io['out.latent_dist.std']), TOL);
  assertClose(
    t,
    'encode() = mean',
    await vae.encode(asFloat(io.image)),
    asFloat(io['out.latent_dist.mean']),
    TOL,
  );
  await assert.rejects(
    vae.encode({ data: new Float32Array(3 * 30 * 30), shape: [1, 3, 30, 30] }),
    /divisible by 4/,
  );
  await vae.dispose();
});

test('real SD 1.5 / SDXL VAE configs parse', { skip: skipWithoutFixtures }, async () => {
  const sd15 = parseVaeConfig(
    await readJson(fixture('configs/stable-diffusion-v1-5/vae/config.json')),
    'sd15',
  );
  assert.equal(sd15.scalingFactor, 0.18215);
  const sdxl = parseVaeConfig(
    await readJson(fixture('configs/stable-diffusion-xl-base-1.0/vae/config.json')),
    'sdxl',
  );
  assert.equal(sdxl.scalingFactor, 0.13025);
  assert.deepEqual(sdxl.ignoredKeys, []);
});
