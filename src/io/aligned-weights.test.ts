import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { test } from 'node:test';
import { fixture, skipWithoutFixtures } from '../../test/helpers/fixtures.js';
import { alignWeights } from './aligned-weights.js';
import { SafetensorsFile } from './safetensors.js';
import { WeightStore } from './weights.js';

test('aligned weights: every tensor float32 at a page-aligned offset, equal to the checkpoint', {
  skip: skipWithoutFixtures,
}, async () => {
  const file = fixture('sdxl-tiny', 'unet', 'diffusion_pytorch_model.safetensors');
  const store = await WeightStore.fromFiles(file, [file]);
  const aligned = await alignWeights(store);
  try {
    assert.equal(aligned.index.entries.length, store.keys().length);
    const src = await SafetensorsFile.open(file);
    const h = await open(aligned.index.file, 'r');
    for (const e of aligned.index.entries) {
      assert.equal(e.offset % 4096, 0, `${e.key} at ${e.offset}`);
      assert.equal(e.dtype, 'F32');
      const want = (await src.readFloat32(e.key)).data;
      const got = new Float32Array(e.byteLength / 4);
      await h.read(new Uint8Array(got.buffer), 0, e.byteLength, e.offset);
      assert.deepEqual(got, want, e.key);
    }
    await h.close();
    await src.close();
  } finally {
    await aligned.dispose();
  }
  assert.equal(existsSync(aligned.index.file), false);
});
