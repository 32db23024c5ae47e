import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  asFloat,
  assertClose,
  fixture,
  loadFixture,
  skipWithoutFixtures,
} from '../../test/helpers/fixtures.js';
import type { Tensor } from '../io/tensor.js';
import { AutoencoderKL } from '../models/autoencoder-kl.js';
import { distriConfig } from '../parallel/config.js';
import { Generator, randn } from '../schedulers/random.js';
import { launchVaeDecodePool } from './vae-rank-program.js';

const VAE = fixture('sdxl-tiny', 'vae');

async function splitDecode(latents: Tensor, ranks: number, f: number): Promise<Tensor> {
  const [batch, , h, w] = latents.shape as [number, number, number, number];
  const config = distriConfig({ height: h * f, width: w * f, ranks, threadsPerRank: 1, timeoutMs: 60_000 });
  const pool = await launchVaeDecodePool(VAE, config, batch);
  try {
    const out = await pool.step(0, { latents });
    // Every exchange point is synchronous, and only those move data.
    assert.ok(pool.stats[0]!.sync);
    assert.ok(pool.stats[0]!.perRank.every((r) => r.bytesPublished > 0));
    return { data: out.data as Float32Array, shape: [...out.shape] };
  } finally {
    await pool.close();
  }
}

test('split VAE decode matches diffusers on vae-tiny: 2, 3 (uneven bands) and 4 ranks', {
  skip: skipWithoutFixtures,
}, async (t) => {
  const io = await loadFixture('vae-tiny', 'io.safetensors');
  const latents = asFloat(io.latents);
  const ref = asFloat(io['out.decoded']);
  const vae = await AutoencoderKL.fromPretrained(VAE, { threads: 1 });
  try {
    const single = await vae.decode(latents);
    for (const ranks of [2, 3, 4]) {
      const split = await splitDecode(latents, ranks, vae.scaleFactor);
      assertClose(t, `${ranks} ranks vs diffusers`, split, ref, { relL2: 1e-4, maxAbsOverMaxRef: 1e-4 });
      assertClose(t, `${ranks} ranks vs one device`, split, single, { relL2: 1e-5 });
    }
  } finally {
    await vae.dispose();
  }
});

test('split VAE decode of a batch of two with an odd latent height equals one device', {
  skip: skipWithoutFixtures,
}, async (t) => {
  const latents = { data: randn([2, 4, 11, 6], new Generator(7)), shape: [2, 4, 11, 6] };
  const vae = await AutoencoderKL.fromPretrained(VAE, { threads: 1 });
  try {
    const single = await vae.decode(latents);
    const split = await splitDecode(latents, 3, vae.scaleFactor);
    assertClose(t, '3 ranks, batch 2, 11 latent rows', split, single, { relL2: 1e-5 });
  } finally {
    await vae.dispose();
  }
});

test('a decode rank that throws ends the decode with an error naming it', {
  skip: skipWithoutFixtures,
}, async () => {
  const config = distriConfig({ height: 32, width: 48, ranks: 2, threadsPerRank: 1, timeoutMs: 60_000 });
  const pool = await launchVaeDecodePool(VAE, config, 1, { fault: { rank: 1, step: 0, kind: 'throw' } });
  try {
    const latents = { data: new Float32Array(4 * 8 * 12), shape: [1, 4, 8, 12] };
    await assert.rejects(pool.step(0, { latents }), /rank 1 failed: injected failure at step 0/);
  } finally {
    await pool.close();
  }
});
