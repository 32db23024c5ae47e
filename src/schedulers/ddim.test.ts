// DDIM beyond the golden trajectories: eta > 0 noise, v-prediction, clipping, spacings, and the SD1.5 pipeline run.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import {
  asFloat,
  assertClose,
  fixture,
  loadFixture,
  skipWithoutFixtures,
} from '../../test/helpers/fixtures.js';
import { DDIMScheduler } from './ddim.js';
import { Generator } from './random.js';
import { createScheduler } from './scheduler.js';

const SD = {
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  clip_sample: false,
  set_alpha_to_one: false,
  steps_offset: 1,
};

function ddim(overrides: Record<string, unknown> = {}): DDIMScheduler {
  const s = createScheduler('ddim', SD, overrides);
  assert.ok(s instanceof DDIMScheduler);
  return s;
}

/** Deterministic test data (not torch's stream; just varied values). */
function data(n: number, seed: number, scale = 1): Float32Array {
  const g = new Generator(seed);
  return g.randn(n).map((v) => v * scale);
}

test('timestep spacings follow diffusers (leading + offset, trailing, linspace rounded half-even)', () => {
  const s = ddim();
  s.setTimesteps(4);
  assert.deepEqual(s.timesteps, [751, 501, 251, 1]);
  const trailing = ddim({ timestep_spacing: 'trailing' });
  trailing.setTimesteps(4);
  assert.deepEqual(trailing.timesteps, [999, 749, 499, 249]);
  trailing.setTimesteps(3); // np.arange(1000, 0, -333.33) → 1000, 666.67, 333.33 → round → 1000, 667, 333
  assert.deepEqual(trailing.timesteps, [999, 666, 332]);
  const lin = ddim({ timestep_spacing: 'linspace' });
  lin.setTimesteps(4); // linspace(0, 999, 4) = 0, 333, 666, 999
  assert.deepEqual(lin.timesteps, [999, 666, 333, 0]);
  lin.setTimesteps(5); // 0, 249.75, 499.5, 749.25, 999 → 0, 250, 500 (half-even), 749, 999
  assert.deepEqual(lin.timesteps, [999, 749, 500, 250, 0]);
  assert.throws(() => s.setTimesteps(1001), /numInferenceSteps must be an integer in \[1, 1000\]/);
});

test('eta > 0: the added noise is std_dev_t · randn from the generator, deterministic per seed', () => {
  const n = 20000;
  const sample = data(n, 11);
  const eps = data(n, 12);
  const eta = 0.7;
  const run = (seed: number) => {
    const s = ddim();
    s.setTimesteps(10);
    return s.step(eps, s.timesteps[3]!, sample, { eta, generator: new Generator(seed) }).prevSample;
  };
  const a = run(42);
  assert.deepEqual(a, run(42), 'same seed, same result');
  assert.notDeepEqual(a, run(43), 'different seed, different noise');

  // Independent float64 reference for the same step, using the same noise.
  const s = ddim();
  s.setTimesteps(10);
  const t = s.timesteps[3]!;
  const prevT = t - 100;
  const at = s.alphasCumprod[t]!;
  const ap = s.alphasCumprod[prevT]!;
  const variance = ((1 - ap) / (1 - at)) * (1 - at / ap);
  const std = eta * Math.sqrt(variance);
  const noise = new Generator(42).randn(n);
  let num = 0;
  let den = 0;
  let resid2 = 0;
  for (let i = 0; i < n; i++) {
    const x0 = (sample[i]! - Math.sqrt(1 - at) * eps[i]!) / Math.sqrt(at);
    const mean = Math.sqrt(ap) * x0 + Math.sqrt(1 - ap - std * std) * eps[i]!;
    const ref = mean + std * noise[i]!;
    num += (a[i]! - ref) ** 2;
    den += ref * ref;
    resid2 += (a[i]! - mean) ** 2;
  }
  assert.ok(Math.sqrt(num / den) < 1e-6, `rel L2 vs float64 ${Math.sqrt(num / den)}`);
  // The variance term has the right magnitude: its empirical std is std_dev_t (±3%).
  const empirical = Math.sqrt(resid2 / n);
  assert.ok(std > 0.01, 'the chosen step has a non-trivial variance');
  assert.ok(Math.abs(empirical / std - 1) < 0.03, `empirical noise std ${empirical} vs ${std}`);
});

test('eta > 0 without a generator is an error; eta = 0 ignores the generator', () => {
  const s = ddim();
  s.setTimesteps(4);
  const x = data(32, 1);
  assert.throws(() => s.step(x, 751, x, { eta: 0.5 }), /eta > 0 needs a generator/);
  const g = new Generator(3);
  const before = g.clone().randn(4);
  s.step(x, 751, x, { eta: 0, generator: g });
  assert.deepEqual(g.randn(4), before, 'no numbers drawn when eta = 0');
});

test('v_prediction matches a float64 hand computation over two steps', () => {
  const s = ddim({ prediction_type: 'v_prediction' });
  s.setTimesteps(4);
  const n = 64;
  let x = data(n, 5);
  let xRef = Float64Array.from(x);
  for (const [k, t] of s.timesteps.slice(0, 2).entries()) {
    const v = data(n, 100 + k);
    const at = s.alphasCumprod[t]!;
    const ap = s.alphasCumprod[t - 250]!;
    const ref = new Float64Array(n);
    const x0Ref = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      x0Ref[i] = Math.sqrt(at) * xRef[i]! - Math.sqrt(1 - at) * v[i]!;
      const epsRef = Math.sqrt(at) * v[i]! + Math.sqrt(1 - at) * xRef[i]!;
      ref[i] = Math.sqrt(ap) * x0Ref[i]! + Math.sqrt(1 - ap) * epsRef;
    }
    const r = s.step(v, t, x);
    assertClose(undefined, `v step ${k}`, vec(r.prevSample), vec(ref), { relL2: 1e-6 });
    assertClose(undefined, `v step ${k} x0`, vec(r.predOriginalSample!), vec(x0Ref), { relL2: 1e-6 });
    x = r.prevSample;
    xRef = ref;
  }
});

test('sample prediction and clip_sample', () => {
  const s = ddim({ prediction_type: 'sample', clip_sample: true, clip_sample_range: 0.5 });
  s.setTimesteps(4);
  const x = data(50, 8);
  const pred = data(50, 9, 3);
  const r = s.step(pred, 501, x);
  for (let i = 0; i < pred.length; i++) {
    assert.equal(r.predOriginalSample![i], Math.max(-0.5, Math.min(0.5, pred[i]!)));
  }
});

test('the last step uses alphas_cumprod[0] (set_alpha_to_one false) or 1 (true)', () => {
  const x = data(16, 2);
  const eps = data(16, 3);
  for (const one of [false, true]) {
    const s = ddim({ set_alpha_to_one: one });
    s.setTimesteps(4);
    const r = s.step(eps, 1, x);
    const ap = one ? 1 : s.alphasCumprod[0]!;
    for (let i = 0; i < 16; i++) {
      const expected = Math.sqrt(ap) * r.predOriginalSample![i]! + Math.sqrt(1 - ap) * eps[i]!;
      assert.ok(Math.abs(r.prevSample[i]! - expected) < 1e-5, `set_alpha_to_one=${one} [${i}]`);
    }
  }
});

test('SD1.5 pipeline fixture (DDIM from the PNDM config, CFG 7.5): latents after every step', {
  skip: skipWithoutFixtures,
}, async (tc) => {
  const config = JSON.parse(
    readFileSync(fixture('configs', 'stable-diffusion-v1-5', 'scheduler', 'scheduler_config.json'), 'utf8'),
  ) as Record<string, unknown>;
  const fx = await loadFixture('pipeline-sd15-tiny', 'io_b.safetensors');
  const s = createScheduler('ddim', config);
  assert.ok(s.ignoredConfigKeys.includes('skip_prk_steps'));
  s.setTimesteps(4);
  assert.deepEqual(s.timesteps, Array.from(fx.scheduler_timesteps!.data as BigInt64Array, Number));
  const lat = asFloat(fx.latents_in).data;
  const n = lat.length;
  let x: Float32Array = lat.map((v) => v * s.initNoiseSigma);
  const preds = asFloat(fx.unet_noise_pred).data;
  const perStep = asFloat(fx.latents_per_step).data;
  for (let i = 0; i < s.timesteps.length; i++) {
    const t = s.timesteps[i]!;
    const uncond = preds.subarray(2 * i * n, (2 * i + 1) * n);
    const text = preds.subarray((2 * i + 1) * n, (2 * i + 2) * n);
    const guided = uncond.map((u, k) => u + Math.fround(7.5 * Math.fround(text[k]! - u)));
    x = s.step(guided, t, x).prevSample;
    const ref = perStep.subarray(i * n, (i + 1) * n);
    assertClose(tc, `step ${i}`, vec(x), vec(ref), { relL2: 1e-6, maxAbsOverMaxRef: 1e-6 });
  }
});

function vec(data: Float32Array | Float64Array) {
  return { data: Float32Array.from(data), shape: [data.length] };
}
