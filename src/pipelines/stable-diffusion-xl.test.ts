import { test } from 'node:test';
import {
  asFloat,
  assertClose,
  fixture,
  loadFixture,
  skipWithoutFixtures,
} from '../../test/helpers/fixtures.js';
import { StableDiffusionXLPipeline } from './stable-diffusion-xl.js';

test('pipeline-sdxl-tiny: embeddings, every step and the image match diffusers', {
  skip: skipWithoutFixtures,
}, async (t) => {
  const pipe = await StableDiffusionXLPipeline.fromPretrained(fixture('sdxl-tiny'), { threads: 1 });
  const cases = [
    ['a', 'a photo of an astronaut riding a horse on mars', 'blurry, low quality, watermark'],
    ['b', 'A majestic LION, jumping from a big stone at night', undefined],
  ] as const;
  for (const [name, prompt, negativePrompt] of cases) {
    const io = await loadFixture('pipeline-sdxl-tiny', `io_${name}.safetensors`);
    const perStep: Array<{ noise: Float32Array; latents: Float32Array }> = [];
    const r = await pipe.generate({
      prompt,
      ...(negativePrompt ? { negativePrompt } : {}),
      height: 64,
      width: 96,
      numInferenceSteps: 4,
      guidanceScale: 5,
      latents: asFloat(io.latents_in),
      onStep: (p) => perStep.push({ noise: p.noisePred.data.slice(), latents: p.latents.data.slice() }),
    });
    const cond = await pipe.conditioning(
      { prompt, ...(negativePrompt ? { negativePrompt } : {}) },
      64,
      96,
      true,
    );
    assertClose(
      t,
      `${name} cfg_prompt_embeds`,
      cond.cond.encoderHiddenStates,
      asFloat(io.cfg_prompt_embeds),
      { relL2: 1e-4 },
    );
    assertClose(t, `${name} cfg_add_text_embeds`, cond.cond.textEmbeds!, asFloat(io.cfg_add_text_embeds), {
      relL2: 1e-4,
    });
    assertClose(t, `${name} cfg_add_time_ids`, cond.cond.timeIds!, asFloat(io.cfg_add_time_ids), {
      relL2: 1e-7,
    });
    const noise = asFloat(io.unet_noise_pred);
    const lat = asFloat(io.latents_per_step);
    const per = noise.data.length / 4;
    const perL = lat.data.length / 4;
    perStep.forEach((s, i) => {
      const shape = [2, 4, 16, 24];
      assertClose(
        t,
        `${name} step ${i} noise_pred`,
        { data: s.noise, shape },
        { data: noise.data.subarray(i * per, (i + 1) * per), shape },
        { relL2: 1e-4 },
      );
      const ls = [1, 4, 16, 24];
      assertClose(
        t,
        `${name} step ${i} latents`,
        { data: s.latents, shape: ls },
        { data: lat.data.subarray(i * perL, (i + 1) * perL), shape: ls },
        { relL2: 1e-4 },
      );
    });
    assertClose(t, `${name} final_latents`, r.latents, asFloat(io.final_latents), { relL2: 1e-4 });
    // The reference image is NHWC; ours NCHW.
    const img = asFloat(io.image);
    const [, h, w] = img.shape as [number, number, number];
    const nchw = new Float32Array(img.data.length);
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++)
        for (let ch = 0; ch < 3; ch++) nchw[(ch * h + y) * w + x] = img.data[(y * w + x) * 3 + ch]!;
    const c = assertClose(
      t,
      `${name} image`,
      r.images!,
      { data: nchw, shape: [1, 3, h, w] },
      { relL2: 1e-4 },
    );
    if (!(c.maxAbs < 1e-3)) throw new Error(`${name} image: max abs ${c.maxAbs} >= 1e-3`);
  }
  await pipe.dispose();
});
