// PNDM beyond the golden PLMS trajectories: the PRK warm-up (no fixture), v-prediction, and config checks.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PNDMScheduler } from './pndm.js';
import { Generator } from './random.js';
import { createScheduler, schedulerFromConfig } from './scheduler.js';

const SD15 = {
  _class_name: 'PNDMScheduler',
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  clip_sample: false,
};

function pndm(overrides: Record<string, unknown> = {}): PNDMScheduler {
  const s = createScheduler('pndm', SD15, overrides);
  assert.ok(s instanceof PNDMScheduler);
  return s;
}

test('timesteps: PLMS repeats the second one; PRK visits each half step of the top four twice', () => {
  const plms = pndm();
  plms.setTimesteps(4);
  assert.deepEqual(plms.timesteps, [751, 501, 501, 251, 1]);
  const prk = pndm({ skip_prk_steps: false });
  prk.setTimesteps(10);
  // Worked by hand from diffusers' numpy: the top four of 1, 101, …, 901 with their +50 half steps.
  assert.deepEqual(
    prk.timesteps,
    [901, 851, 851, 801, 801, 751, 751, 701, 701, 651, 651, 601, 601, 501, 401, 301, 201, 101, 1],
  );
  assert.throws(() => plms.setTimesteps(0), /numInferenceSteps must be an integer in \[1, 1000\]/);
});

/**
 * With the true noise ε of x_t = √ᾱ_t·x0 + √(1-ᾱ_t)·ε as model output, formula (9) is exact and every
 * multistep / Runge-Kutta weighting sums to one, so each step must land on the noising trajectory at the
 * timestep of the next model call (computed here in float64).
 */
for (const skipPrk of [true, false]) {
  test(`constant true noise stays on the noising trajectory (${skipPrk ? 'PLMS only' : 'PRK, then PLMS'})`, () => {
    const s = pndm({ skip_prk_steps: skipPrk, set_alpha_to_one: true });
    // An even stride: with an odd one (e.g. 83 for 12 steps) diffusers' PRK lands one timestep beside the
    // half step it evaluates next (914 - 41 = 873, then the model runs at 831 + 41 = 872), as we do.
    s.setTimesteps(10);
    const n = 64;
    const g = new Generator(7);
    const x0 = g.randn(n);
    const eps = g.randn(n);
    const ac = s.alphasCumprod;
    const noised = (alpha: number) =>
      Float64Array.from(x0, (v, i) => Math.sqrt(alpha) * v + Math.sqrt(1 - alpha) * eps[i]!);
    const ts = s.timesteps;
    let x: Float32Array = Float32Array.from(noised(ac[ts[0]!]!));
    for (let i = 0; i < ts.length; i++) {
      x = s.step(eps, ts[i]!, x).prevSample;
      const alpha = i + 1 < ts.length ? ac[ts[i + 1]!]! : 1;
      const ref = noised(alpha);
      let err = 0;
      for (let k = 0; k < n; k++) err = Math.max(err, Math.abs(x[k]! - ref[k]!));
      assert.ok(err < 2e-5, `call ${i} (t=${ts[i]}): max |x - x_ref| = ${err}`);
    }
  });
}

test('v-prediction: the first step with the true v equals the epsilon step with the true noise', () => {
  const n = 64;
  const g = new Generator(3);
  const x0 = g.randn(n);
  const eps = g.randn(n);
  const v = pndm({ prediction_type: 'v_prediction' });
  const e = pndm();
  v.setTimesteps(10);
  e.setTimesteps(10);
  const t = v.timesteps[0]!;
  const a = v.alphasCumprod[t]!;
  const x = Float32Array.from(x0, (x, i) => Math.sqrt(a) * x + Math.sqrt(1 - a) * eps[i]!);
  const vel = Float32Array.from(x0, (x, i) => Math.sqrt(a) * eps[i]! - Math.sqrt(1 - a) * x);
  const rv = v.step(vel, t, x).prevSample;
  const re = e.step(eps, t, x).prevSample;
  for (let k = 0; k < n; k++) assert.ok(Math.abs(rv[k]! - re[k]!) < 1e-5, `value ${k}: ${rv[k]} vs ${re[k]}`);
});

test('reset() forgets the multistep history: a second run repeats the first bit for bit', () => {
  const s = pndm();
  s.setTimesteps(6);
  const g = new Generator(5);
  const x0 = g.randn(32);
  const outs = s.timesteps.map(() => g.randn(32));
  const run = () => {
    let x = x0;
    s.timesteps.forEach((t, i) => {
      x = s.step(outs[i]!, t, x).prevSample;
    });
    return x;
  };
  const first = run();
  s.reset();
  assert.deepEqual(run(), first);
});

test('config: SD 1.5 scheduler_config.json selects PNDM; unsupported values name the key', () => {
  assert.ok(schedulerFromConfig(SD15) instanceof PNDMScheduler);
  assert.throws(
    () => pndm({ prediction_type: 'sample' }),
    /PNDMScheduler config: "prediction_type" = "sample" is not supported; expected epsilon or v_prediction/,
  );
  assert.throws(
    () => pndm({ skip_prk_steps: 'yes' }),
    /"skip_prk_steps" = "yes" is not supported; expected true or false/,
  );
  const s = pndm();
  assert.throws(() => s.step(new Float32Array(4), 751, new Float32Array(4)), /call setTimesteps before step/);
  s.setTimesteps(4);
  assert.throws(
    () => s.step(new Float32Array(4), 751, new Float32Array(5)),
    /model output has 4 values, sample has 5/,
  );
  assert.deepEqual(s.ignoredConfigKeys, ['clip_sample']);
});
