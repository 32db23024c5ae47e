// DistriFusion properties on the tiny SDXL checkpoint: full_sync equals one device for any rank count and
// height, warmup over the whole run equals full_sync, async modes beat naive patches, runs are
// bit-deterministic, and a failing rank ends the run with an error naming it.
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { nchwcBlockSize } from '../src/graph/nchwc.js';
import type { Tensor } from '../src/io/tensor.js';
import type { DistriConfigInput, SyncMode } from '../src/parallel/config.js';
import type { FaultInjection } from '../src/parallel/rank-worker.js';
import { DistriSDXLPipeline } from '../src/pipelines/distri-pipelines.js';
import type { GenerateOptions } from '../src/pipelines/generate-options.js';
import { StableDiffusionXLPipeline } from '../src/pipelines/stable-diffusion-xl.js';
import { compare, fixture, skipWithoutFixtures } from './helpers/fixtures.js';

const UNET = fixture('sdxl-tiny', 'unet');
let base: StableDiffusionXLPipeline;

before(async () => {
  if (!skipWithoutFixtures)
    base = await StableDiffusionXLPipeline.fromPretrained(fixture('sdxl-tiny'), { threads: 1 });
});
after(async () => {
  await base?.dispose();
});

interface Trace {
  noise: Float32Array[];
  latents: Tensor;
}

function options(
  height: number,
  width: number,
  steps: number,
  extra: Partial<GenerateOptions> = {},
): GenerateOptions {
  return {
    prompt: 'a photo of an astronaut riding a horse on mars',
    negativePrompt: 'blurry, low quality, watermark',
    height,
    width,
    numInferenceSteps: steps,
    guidanceScale: 5,
    seed: 1234,
    scheduler: 'ddim',
    outputType: 'latent',
    ...extra,
  };
}

async function single(o: GenerateOptions): Promise<Trace> {
  const noise: Float32Array[] = [];
  const r = await base.generate({ ...o, onStep: (p) => noise.push(p.noisePred.data.slice()) });
  return { noise, latents: r.latents };
}

async function distributed(
  config: DistriConfigInput,
  runs: Array<GenerateOptions & { warmupSteps?: number }>,
  fault?: FaultInjection,
): Promise<Trace[]> {
  const pipe = DistriSDXLPipeline.fromPipeline(
    base,
    UNET,
    { threadsPerRank: 1, timeoutMs: 60_000, ...config },
    fault ? { fault } : {},
  );
  try {
    const out: Trace[] = [];
    for (const o of runs) {
      const noise: Float32Array[] = [];
      const r = await pipe.generate({ ...o, onStep: (p) => noise.push(p.noisePred.data.slice()) });
      out.push({ noise, latents: r.latents });
    }
    return out;
  } finally {
    await pipe.close();
  }
}

const rel = (a: Float32Array, b: Float32Array) => compare(a, b).relL2;

test('full_sync equals one rank at every step: 2, 3, 4 ranks, uneven heights, CFG split on and off', {
  skip: skipWithoutFixtures,
}, async (t) => {
  const cases: Array<{ ranks: number; splitBatch: boolean; height: number; width: number }> = [
    { ranks: 2, splitBatch: false, height: 128, width: 96 },
    { ranks: 2, splitBatch: true, height: 128, width: 96 },
    { ranks: 3, splitBatch: false, height: 104, width: 96 },
    { ranks: 4, splitBatch: true, height: 104, width: 88 },
    { ranks: 4, splitBatch: false, height: 128, width: 96 },
  ];
  for (const c of cases) {
    const o = options(c.height, c.width, 3);
    const ref = await single(o);
    const [d] = await distributed({ mode: 'full_sync', ...c }, [o]);
    const what = `${c.ranks} ranks sb=${c.splitBatch} ${c.height}x${c.width}`;
    d!.noise.forEach((n, i) => {
      const e = rel(n, ref.noise[i]!);
      t.diagnostic(`${what} step ${i} noise_pred rel L2 ${e.toExponential(2)}`);
      assert.ok(e < 1e-5, `${what} step ${i}: rel L2 ${e}`);
    });
    const e = rel(d!.latents.data, ref.latents.data);
    t.diagnostic(`${what} final latents rel L2 ${e.toExponential(2)}`);
    assert.ok(e < 1e-5, `${what} final latents: rel L2 ${e}`);
  }
});

test('warmup over the whole run equals full_sync', { skip: skipWithoutFixtures }, async () => {
  const o = options(128, 96, 3);
  const [full] = await distributed(
    { ranks: 2, splitBatch: false, mode: 'full_sync', height: 128, width: 96 },
    [o],
  );
  for (const mode of ['corrected_async_gn', 'stale_gn', 'no_sync'] as const) {
    const [w] = await distributed({ ranks: 2, splitBatch: false, mode, height: 128, width: 96 }, [
      { ...o, warmupSteps: 3 },
    ]);
    assert.deepEqual(w!.latents.data, full!.latents.data, `${mode} with warmup 3 of 3 steps`);
  }
});

test('async modes: finite, deterministic, and closer to one rank than naive patches (4 ranks)', {
  skip: skipWithoutFixtures,
}, async (t) => {
  const o = { ...options(128, 96, 6), warmupSteps: 1 };
  const ref = await single(o);
  const cfg = { ranks: 4, splitBatch: false, height: 128, width: 96 };
  const [naive] = await distributed({ ...cfg, parallelism: 'naive_patch' }, [o]);
  const naiveErr = rel(naive!.latents.data, ref.latents.data);
  t.diagnostic(`naive_patch: final-latent rel L2 vs one rank ${naiveErr.toExponential(3)}`);
  const modes: SyncMode[] = ['corrected_async_gn', 'stale_gn', 'sync_gn', 'separate_gn', 'no_sync'];
  for (const mode of modes) {
    const [a, b] = await distributed({ ...cfg, mode }, [o, o]);
    const err = rel(a!.latents.data, ref.latents.data);
    t.diagnostic(`${mode}: final-latent rel L2 vs one rank ${err.toExponential(3)}`);
    assert.ok(Number.isFinite(err), `${mode}: not finite`);
    assert.ok(err > 0 && err < naiveErr, `${mode}: ${err} not below naive_patch ${naiveErr}`);
    assert.deepEqual(a!.latents.data, b!.latents.data, `${mode}: two runs differ`);
  }
});

for (const kind of ['throw', 'exit', 'hang'] as const) {
  test(`a rank that ${kind === 'hang' ? 'hangs' : kind === 'exit' ? 'exits' : 'throws'} ends the run with an error naming it`, {
    skip: skipWithoutFixtures,
  }, async () => {
    const started = Date.now();
    await assert.rejects(
      distributed(
        {
          ranks: 3,
          splitBatch: false,
          mode: 'corrected_async_gn',
          height: 128,
          width: 96,
          timeoutMs: 4000,
          warmupSteps: 1,
        },
        [options(128, 96, 4)],
        { rank: 1, step: 2, kind },
      ),
      kind === 'hang' ? /timed out after 4000 ms/ : /rank 1 (failed|exited)/,
    );
    assert.ok(Date.now() - started < 60_000, 'took too long to fail');
  });
}

test('batches: two prompts × two images per prompt, full_sync on 2 ranks equals one device', {
  skip: skipWithoutFixtures,
}, async () => {
  const o = options(64, 96, 2, {
    prompt: ['a red fox in the snow', 'a lighthouse at dusk'],
    negativePrompt: ['blurry', 'low quality'],
    numImagesPerPrompt: 2,
  });
  const ref = await single(o);
  assert.deepEqual(ref.latents.shape, [4, 4, 16, 24]);
  for (const splitBatch of [false, true]) {
    const [d] = await distributed({ ranks: 2, splitBatch, mode: 'full_sync', height: 64, width: 96 }, [o]);
    const e = rel(d!.latents.data, ref.latents.data);
    assert.ok(e < 1e-5, `splitBatch ${splitBatch}: rel L2 ${e}`);
  }
});

test('images decoded in row bands across the ranks (splitVaeDecode) equal the single-device decode: batch of 4, 3 ranks', {
  skip: skipWithoutFixtures,
}, async (t) => {
  const o = options(104, 96, 2, {
    prompt: ['a red fox in the snow', 'a lighthouse at dusk'],
    numImagesPerPrompt: 2,
    outputType: 'image',
  });
  const ref = await base.generate(o);
  const config = { ranks: 3, mode: 'full_sync' as const, height: 104, width: 96, threadsPerRank: 1 };
  for (const splitVaeDecode of [true, false]) {
    const pipe = DistriSDXLPipeline.fromPipeline(
      base,
      UNET,
      { ...config, splitVaeDecode },
      { vaeDir: fixture('sdxl-tiny', 'vae') },
    );
    try {
      const r = await pipe.generate(o);
      assert.deepEqual(r.images!.shape, [4, 3, 104, 96]);
      const e = rel(r.images!.data, ref.images!.data);
      t.diagnostic(`splitVaeDecode ${splitVaeDecode}: images rel L2 ${e.toExponential(2)}`);
      assert.ok(e < 1e-5, `splitVaeDecode ${splitVaeDecode}: images rel L2 ${e}`);
      // One decode of the whole batch on all three ranks, or none.
      assert.deepEqual(
        pipe.decodeStats.map((s) => s.perRank.length),
        splitVaeDecode ? [3] : [],
      );
    } finally {
      await pipe.close();
    }
  }
  assert.throws(
    () => DistriSDXLPipeline.fromPipeline(base, UNET, { ...config, splitVaeDecode: true }),
    /DistriConfig\.splitVaeDecode: the ranks load the VAE from its folder, and none was given/,
  );
});

test('DistriSDPipeline: an SD 1.5-layout UNet (4 levels) split in 2 and 3 bands, full_sync equals one device', {
  skip: skipWithoutFixtures,
}, async () => {
  const { StableDiffusionPipeline } = await import('../src/pipelines/stable-diffusion.js');
  const { DistriSDPipeline } = await import('../src/pipelines/distri-pipelines.js');
  const { UNet2DConditionModel } = await import('../src/models/unet-2d-condition.js');
  const { AutoencoderKL } = await import('../src/models/autoencoder-kl.js');
  const { CLIPTextModel } = await import('../src/models/clip-text-model.js');
  const { CLIPTokenizer } = await import('../src/models/clip-tokenizer.js');
  const { readJson } = await import('../src/io/diffusers-folder.js');
  const unetDir = fixture('unet-sd15-tiny', 'unet');
  const sd = new StableDiffusionPipeline({
    unet: await UNet2DConditionModel.fromPretrained(unetDir, { threads: 1 }),
    vae: await AutoencoderKL.fromPretrained(fixture('sdxl-tiny', 'vae'), { threads: 1 }),
    textEncoder: await CLIPTextModel.fromPretrained(fixture('sdxl-tiny', 'text_encoder'), { threads: 1 }),
    tokenizer: await CLIPTokenizer.fromPretrained(fixture('sdxl-tiny', 'tokenizer')),
    schedulerConfig: await readJson(fixture('configs/stable-diffusion-v1-5/scheduler/scheduler_config.json')),
  });
  const o = { ...options(160, 96, 3), guidanceScale: 7.5, scheduler: 'euler' as const };
  const ref = await sd.generate(o);
  for (const ranks of [2, 3]) {
    const pipe = DistriSDPipeline.fromPipeline(sd, unetDir, {
      ranks,
      splitBatch: false,
      mode: 'full_sync',
      height: 160,
      width: 96,
      timeoutMs: 60_000,
    });
    try {
      const r = await pipe.generate(o);
      const e = rel(r.latents.data, ref.latents.data);
      assert.ok(e < 1e-5, `${ranks} ranks: rel L2 ${e}`);
    } finally {
      await pipe.close();
    }
  }
  await sd.dispose();
});

test('naive patches by columns and alternating rows/columns run, and one column band equals one device', {
  skip: skipWithoutFixtures,
}, async () => {
  const o = options(128, 96, 3);
  const ref = await single(o);
  for (const splitScheme of ['col', 'alternate'] as const) {
    const [a, b] = await distributed(
      { ranks: 2, splitBatch: false, parallelism: 'naive_patch', splitScheme, height: 128, width: 96 },
      [o, o],
    );
    const e = rel(a!.latents.data, ref.latents.data);
    assert.ok(Number.isFinite(e) && e > 1e-3, `${splitScheme}: error ${e} (seams are expected)`);
    assert.deepEqual(a!.latents.data, b!.latents.data);
  }
  // With CFG split over 2 ranks each group has one band: naive patches are then exact.
  const [one] = await distributed(
    { ranks: 2, splitBatch: true, parallelism: 'naive_patch', splitScheme: 'col', height: 128, width: 96 },
    [o],
  );
  assert.ok(rel(one!.latents.data, ref.latents.data) < 1e-5);
});

test('the shared weight copies (conv filters stored for NCHWc, linear weights with packed GEMM copies) lose their names once the ranks map them, so a killed run leaks no memory', {
  skip: skipWithoutFixtures || (!existsSync('/dev/shm') && 'no /dev/shm'),
}, async () => {
  const copies = () =>
    [tmpdir(), '/dev/shm'].flatMap((d) =>
      readdirSync(d)
        .filter((n) => /^distrifusion-(weights|packed)-/.test(n))
        .map((n) => join(d, n)),
    );
  const already = new Set(copies());
  const during: string[] = [];
  const pipe = DistriSDXLPipeline.fromPipeline(base, UNET, {
    ranks: 2,
    threadsPerRank: 1,
    splitBatch: false,
    mode: 'full_sync',
    height: 64,
    width: 64,
    timeoutMs: 60_000,
  });
  try {
    const r = await pipe.generate({
      ...options(64, 64, 2),
      onStep: () => during.push(...copies().filter((n) => !already.has(n))),
    });
    const want = await single(options(64, 64, 2));
    assert.ok(rel(r.latents.data as Float32Array, want.latents.data as Float32Array) < 1e-5);
    // The copy holds conv filters reordered for ORT's NCHWc kernel wherever this CPU has one.
    const block = await nchwcBlockSize();
    assert.deepEqual(pipe.weightSharing, { shared: true, nchwcBlock: block, packedGemm: true });
  } finally {
    await pipe.close();
  }
  assert.deepEqual(during, []);
});
