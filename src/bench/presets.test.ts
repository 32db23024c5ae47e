import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fixture, skipWithoutFixtures } from '../../test/helpers/fixtures.js';
import { readJson } from '../io/diffusers-folder.js';
import { PRESETS } from './presets.js';

test('embedded preset configs equal the real config files', { skip: skipWithoutFixtures }, async () => {
  const sd15 = await readJson(fixture('configs', 'stable-diffusion-v1-5', 'unet', 'config.json'));
  const sdxl = await readJson(fixture('configs', 'stable-diffusion-xl-base-1.0', 'unet', 'config.json'));
  assert.deepEqual(PRESETS.sd15.unetConfig, sd15);
  assert.deepEqual(PRESETS.sdxl.unetConfig, sdxl);
  for (const [name, repo] of [
    ['sd15', 'stable-diffusion-v1-5'],
    ['sdxl', 'stable-diffusion-xl-base-1.0'],
  ] as const) {
    assert.deepEqual(PRESETS[name].vaeConfig, await readJson(fixture('configs', repo, 'vae', 'config.json')));
  }
});
