import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import {
  asFloat,
  assertClose,
  fixture,
  loadFixture,
  skipWithoutFixtures,
} from '../../test/helpers/fixtures.js';
import { readJson } from '../io/diffusers-folder.js';
import { AutoencoderKL } from '../models/autoencoder-kl.js';
import { CLIPTextModel } from '../models/clip-text-model.js';
import { CLIPTokenizer } from '../models/clip-tokenizer.js';
import { UNet2DConditionModel } from '../models/unet-2d-condition.js';
import { StableDiffusionPipeline } from './stable-diffusion.js';

interface Case {
  file: string;
  prompt: string;
  negativePrompt?: string;
  /** Unset: the checkpoint's scheduler_config.json (PNDM). */
  scheduler?: 'ddim';
}

/** One pipeline-sd15-tiny case: the conditioning, every UNet call, the final latents and the image. */
async function matchCase(t: TestContext, c: Case): Promise<void> {
  const opts = { threads: 1 };
  const pipe = new StableDiffusionPipeline({
    unet: await UNet2DConditionModel.fromPretrained(fixture('unet-sd15-tiny', 'unet'), opts),
    vae: await AutoencoderKL.fromPretrained(fixture('sdxl-tiny', 'vae'), opts),
    textEncoder: await CLIPTextModel.fromPretrained(fixture('sdxl-tiny', 'text_encoder'), opts),
    tokenizer: await CLIPTokenizer.fromPretrained(fixture('sdxl-tiny', 'tokenizer')),
    schedulerConfig: await readJson(fixture('configs/stable-diffusion-v1-5/scheduler/scheduler_config.json')),
  });
  const io = await loadFixture('pipeline-sd15-tiny', c.file);
  const steps: Float32Array[] = [];
  const timesteps: number[] = [];
  const r = await pipe.generate({
    prompt: c.prompt,
    ...(c.negativePrompt ? { negativePrompt: c.negativePrompt } : {}),
    height: 32,
    width: 48,
    numInferenceSteps: 4,
    guidanceScale: 7.5,
    ...(c.scheduler ? { scheduler: c.scheduler } : {}),
    latents: asFloat(io.latents_in),
    onStep: (p) => {
      steps.push(p.noisePred.data.slice());
      timesteps.push(p.timestep);
    },
  });
  assert.deepEqual(timesteps, Array.from(io.unet_timesteps!.data as ArrayLike<number | bigint>, Number));
  const cond = await pipe.conditioning(
    { prompt: c.prompt, ...(c.negativePrompt ? { negativePrompt: c.negativePrompt } : {}) },
    true,
  );
  assertClose(t, 'cfg_prompt_embeds', cond.cond.encoderHiddenStates, asFloat(io.cfg_prompt_embeds), {
    relL2: 1e-4,
  });
  const ref = asFloat(io.unet_noise_pred);
  const per = ref.data.length / steps.length;
  steps.forEach((s, i) => {
    const shape = [2, 4, 8, 12];
    assertClose(
      t,
      `step ${i} noise_pred`,
      { data: s, shape },
      { data: ref.data.subarray(i * per, (i + 1) * per), shape },
      { relL2: 1e-4 },
    );
  });
  assertClose(t, 'final_latents', r.latents, asFloat(io.final_latents), { relL2: 1e-4 });
  const img = asFloat(io.image);
  const [, h, w] = img.shape as [number, number, number];
  const nchw = new Float32Array(img.data.length);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      for (let ch = 0; ch < 3; ch++) nchw[(ch * h + y) * w + x] = img.data[(y * w + x) * 3 + ch]!;
  const cmp = assertClose(t, 'image', r.images!, { data: nchw, shape: [1, 3, h, w] }, { relL2: 1e-4 });
  if (!(cmp.maxAbs < 1e-3)) throw new Error(`image: max abs ${cmp.maxAbs} >= 1e-3`);
  await pipe.dispose();
}

test(
  "pipeline-sd15-tiny case a (the config's PNDM, 5 UNet calls, negative prompt): every call and the image match diffusers",
  {
    skip: skipWithoutFixtures,
  },
  (t) =>
    matchCase(t, {
      file: 'io_a.safetensors',
      prompt: 'a photo of an astronaut riding a horse on mars',
      negativePrompt: 'blurry, low quality, watermark',
    }),
);

test(
  'pipeline-sd15-tiny case b (DDIM, no negative prompt): every step and the image match diffusers',
  {
    skip: skipWithoutFixtures,
  },
  (t) =>
    matchCase(t, {
      file: 'io_b.safetensors',
      prompt: 'A majestic LION, jumping from a big stone at night',
      scheduler: 'ddim',
    }),
);
