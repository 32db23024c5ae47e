// Euler beyond the golden trajectories: the SDXL pipeline runs, v-prediction, spacings, Karras bounds, state.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { asFloat, assertClose, loadFixture, skipWithoutFixtures } from '../../test/helpers/fixtures.js';
import { EulerDiscreteScheduler } from './euler-discrete.js';
import { Generator } from './random.js';
import { createScheduler } from './scheduler.js';

const SDXL = {
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  steps_offset: 1,
  timestep_spacing: 'leading',
};

function euler(overrides: Record<string, unknown> = {}): EulerDiscreteScheduler {
  const s = createScheduler('euler', SDXL, overrides);
  assert.ok(s instanceof EulerDiscreteScheduler);
  return s;
}

function vec(data: Float32Array | Float64Array) {
  return { data: Float32Array.from(data), shape: [data.length] };
}

/** σ(t) = sqrt((1 - ᾱ_t) / ᾱ_t) in float64 from the scheduler's table. */
function sigmaAt(s: EulerDiscreteScheduler, t: number): number {
  const a = s.alphasCumprod[t]!;
  return Math.sqrt((1 - a) / a);
}

for (const c of ['a', 'b']) {
  test(`SDXL pipeline fixture ${c} (4 Euler steps, CFG 5): model inputs and latents after every step`, {
    skip: skipWithoutFixtures,
  }, async (tc) => {
    const fx = await loadFixture('pipeline-sdxl-tiny', `io_${c}.safetensors`);
    const s = euler();
    s.setTimesteps(4);
    assert.deepEqual(s.timesteps, Array.from(asFloat(fx.scheduler_timesteps).data));
    assert.deepEqual(s.sigmas, Array.from(asFloat(fx.scheduler_sigmas).data));
    const lat = asFloat(fx.latents_in).data;
    const n = lat.length;
    let x: Float32Array = lat.map((v) => v * s.initNoiseSigma);
    const inputs = asFloat(fx.unet_latent_model_input).data;
    const preds = asFloat(fx.unet_noise_pred).data;
    const perStep = asFloat(fx.latents_per_step).data;
    const tol = { relL2: 1e-6, maxAbsOverMaxRef: 1e-6 };
    for (let i = 0; i < s.timesteps.length; i++) {
      const t = s.timesteps[i]!;
      // The pipeline scales cat([latents] * 2); both halves are the same.
      const xin = s.scaleModelInput(x, t);
      assertClose(tc, `input ${i}`, vec(xin), vec(inputs.subarray(2 * i * n, (2 * i + 1) * n)), tol);
      const uncond = preds.subarray(2 * i * n, (2 * i + 1) * n);
      const text = preds.subarray((2 * i + 1) * n, (2 * i + 2) * n);
      const guided = uncond.map((u, k) => u + Math.fround(5 * Math.fround(text[k]! - u)));
      x = s.step(guided, t, x).prevSample;
      assertClose(tc, `latents ${i}`, vec(x), vec(perStep.subarray(i * n, (i + 1) * n)), tol);
    }
  });
}

test('v_prediction matches a float64 hand computation over two steps', () => {
  const s = euler({ prediction_type: 'v_prediction' });
  s.setTimesteps(10);
  const n = 64;
  const g = new Generator(9);
  let x: Float32Array = g.randn(n).map((v) => v * s.initNoiseSigma);
  let xRef = Float64Array.from(x);
  for (let k = 0; k < 2; k++) {
    const t = s.timesteps[k]!;
    const v = g.randn(n);
    const sigma = sigmaAt(s, t);
    const next = sigmaAt(s, s.timesteps[k + 1]!);
    const ref = new Float64Array(n);
    const scaled = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      scaled[i] = xRef[i]! / Math.sqrt(sigma * sigma + 1);
      const x0 = v[i]! * (-sigma / Math.sqrt(sigma * sigma + 1)) + xRef[i]! / (sigma * sigma + 1);
      ref[i] = xRef[i]! + ((xRef[i]! - x0) / sigma) * (next - sigma);
    }
    assertClose(undefined, `scaled ${k}`, vec(s.scaleModelInput(x, t)), vec(scaled), { relL2: 1e-6 });
    x = s.step(v, t, x).prevSample;
    assertClose(undefined, `v step ${k}`, vec(x), vec(ref), { relL2: 1e-6 });
    xRef = ref;
  }
});

test('linspace and trailing spacings: fractional float32 timesteps, init_noise_sigma = max sigma', () => {
  const lin = euler({ timestep_spacing: 'linspace' });
  lin.setTimesteps(4); // np.linspace(0, 999, 4, dtype=float32)[::-1]
  assert.deepEqual(lin.timesteps, [999, 666, 333, 0]);
  lin.setTimesteps(7);
  assert.deepEqual(lin.timesteps, [999, 832.5, 666, 499.5, 333, 166.5, 0]);
  // σ at 832.5 is linear interpolation of the float32 table (np.interp).
  const s8 = Math.fround((sigmaAt(lin, 832) + sigmaAt(lin, 833)) / 2);
  assert.ok(Math.abs(lin.sigmas[1]! - s8) <= 2e-7 * s8);
  assert.equal(lin.initNoiseSigma, lin.sigmas[0]);
  assert.equal(lin.sigmas.at(-1), 0);
  const tr = euler({ timestep_spacing: 'trailing' });
  tr.setTimesteps(4);
  assert.deepEqual(tr.timesteps, [999, 749, 499, 249]);
  assert.equal(tr.initNoiseSigma, tr.sigmas[0]);
  const lead = euler();
  lead.setTimesteps(4);
  const m = lead.sigmas[0]!;
  assert.ok(Math.abs(lead.initNoiseSigma - Math.sqrt(m * m + 1)) < 1e-6 * m);
});

test('Karras sigmas: rho-7 spacing between sigma_min and sigma_max (config values win)', () => {
  const s = euler({ use_karras_sigmas: true, sigma_min: 0.1, sigma_max: 10 });
  s.setTimesteps(5);
  assert.equal(s.sigmas.length, 6);
  for (let i = 0; i < 5; i++) {
    const r = i / 4;
    const expected = (10 ** (1 / 7) + r * (0.1 ** (1 / 7) - 10 ** (1 / 7))) ** 7;
    assert.ok(Math.abs(s.sigmas[i]! - expected) <= 1e-7 * expected, `sigma ${i}`);
  }
  // Timesteps are where the training sigmas take those values (log-linear interpolation).
  for (let i = 0; i < 5; i++) {
    const t = s.timesteps[i]!;
    const lo = Math.floor(t);
    const w = t - lo;
    const logSigma = (1 - w) * Math.log(sigmaAt(s, lo)) + w * Math.log(sigmaAt(s, lo + 1));
    assert.ok(Math.abs(logSigma - Math.log(s.sigmas[i]!)) < 1e-5, `timestep ${i}`);
  }
});

test('step index: the first call finds the timestep, later calls count on', () => {
  const s = euler();
  s.setTimesteps(4);
  const x = new Generator(1).randn(16);
  const eps = new Generator(2).randn(16);
  // Starting mid-schedule (img2img) works from the given timestep.
  const r = s.step(eps, s.timesteps[2]!, x);
  const fresh = euler();
  fresh.setTimesteps(4);
  const dt = fresh.sigmas[3]! - fresh.sigmas[2]!;
  assert.ok(Math.abs(r.prevSample[0]! - (x[0]! + eps[0]! * dt)) < 1e-5);
  s.step(eps, s.timesteps[3]!, r.prevSample);
  assert.throws(() => s.step(eps, s.timesteps[3]!, x), /all 4 steps are done; call reset/);
  s.reset();
  assert.throws(() => s.step(eps, 123, x), /timestep 123 is not in the schedule/);
});

test('a generator passed to step advances like diffusers (noise drawn each step, unused at churn 0)', () => {
  const s = euler();
  s.setTimesteps(4);
  const x = new Generator(1).randn(40);
  const eps = new Generator(2).randn(40);
  const g = new Generator(7);
  const plain = s.step(eps, s.timesteps[0]!, x).prevSample;
  s.reset();
  const withGen = s.step(eps, s.timesteps[0]!, x, { generator: g }).prevSample;
  assert.deepEqual(withGen, plain);
  const expected = new Generator(7);
  expected.randn(40);
  assert.deepEqual(g.randn(8), expected.randn(8));
});
