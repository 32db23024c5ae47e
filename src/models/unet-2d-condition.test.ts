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
import { UNet2DConditionModel } from './unet-2d-condition.js';
import { parseUNetConfig } from './unet-config.js';

const TOL = { relL2: 1e-4, maxAbsOverMaxRef: 1e-4 };

for (const [name, dir, sdxl] of [
  ['unet-sdxl-tiny', fixture('sdxl-tiny', 'unet'), true],
  ['unet-sd15-tiny', fixture('unet-sd15-tiny', 'unet'), false],
] as const) {
  test(`${name}: outputs and intermediates match diffusers`, { skip: skipWithoutFixtures }, async (t) => {
    const unet = await UNet2DConditionModel.fromPretrained(dir, { threads: 1 });
    for (const c of ['a', 'b']) {
      const io = await loadFixture(name, `io_${c}.safetensors`);
      const out = await unet.forward(
        {
          sample: asFloat(io.sample),
          timestep: io.timestep!,
          encoderHiddenStates: asFloat(io.encoder_hidden_states),
          ...(sdxl ? { textEmbeds: asFloat(io.text_embeds), timeIds: asFloat(io.time_ids) } : {}),
        },
        { intermediates: true },
      );
      assertClose(t, `${name} ${c} out.sample`, out, asFloat(io['out.sample']), TOL);
      for (const [k, v] of Object.entries(io)) {
        if (!k.startsWith('intermediate.')) continue;
        const mine = out.intermediates?.[k.slice('intermediate.'.length)];
        assert.ok(mine, `no intermediate ${k}`);
        assertClose(t, `${name} ${c} ${k}`, mine, asFloat(v), TOL);
      }
    }
    await unet.dispose();
  });
}

test('real SD 1.5 and SDXL UNet configs parse', { skip: skipWithoutFixtures }, async () => {
  const sdxl = parseUNetConfig(
    await readJson(fixture('configs/stable-diffusion-xl-base-1.0/unet/config.json')),
    'sdxl',
  );
  assert.deepEqual(sdxl.heads, [5, 10, 20]);
  assert.deepEqual(sdxl.transformerLayersPerBlock, [1, 2, 10]);
  assert.equal(sdxl.additionEmbed?.inputDim, 2816);
  const sd15 = parseUNetConfig(
    await readJson(fixture('configs/stable-diffusion-v1-5/unet/config.json')),
    'sd15',
  );
  assert.deepEqual(sd15.heads, [8, 8, 8, 8]);
  assert.equal(sd15.linearProjection, false);
  assert.deepEqual(sdxl.ignoredKeys, []);
});
