// Golden tests: every DDIM / Euler / DPM-Solver++ / PNDM trajectory in fixtures/schedulers (diffusers 0.24,
// torch float32) is replayed from the file's base config (SDXL's, or SD 1.5's for PNDM) plus its overrides.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import {
  asFloat,
  assertClose,
  compare,
  fixture,
  haveFixtures,
  loadFixture,
  skipWithoutFixtures,
} from '../../test/helpers/fixtures.js';
import type { AnyTensor } from '../index.js';
import { createScheduler, type Scheduler, type SchedulerName } from './scheduler.js';

interface FixtureEntry {
  scheduler: string;
  config_base: string;
  overrides: Record<string, unknown>;
  num_inference_steps: number;
  init_noise_sigma: number;
  step_kwargs: { eta?: number };
  has_pred_original_samples: boolean;
}

const CLASSES: Record<string, SchedulerName> = {
  DDIMScheduler: 'ddim',
  EulerDiscreteScheduler: 'euler',
  DPMSolverMultistepScheduler: 'dpm-solver',
  PNDMScheduler: 'pndm',
};

/** JSON with Python's -Infinity (index.json has lambda_min_clipped = -inf). */
function readPyJson(path: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path, 'utf8').replace(/-Infinity/g, 'null')) as Record<string, unknown>;
}

const index = haveFixtures
  ? (readPyJson(fixture('schedulers', 'index.json')).files as Record<string, FixtureEntry>)
  : {};

// The bound for per-step outputs (the README suggests 1e-5).
const TOL = { relL2: 1e-6, maxAbsOverMaxRef: 1e-6 };

function numbers(t: AnyTensor | undefined): number[] {
  if (!t) throw new Error('fixture tensor missing');
  return Array.from(t.data as ArrayLike<number | bigint>, Number);
}

/** Row i of a [steps, ...] tensor. */
function row(t: AnyTensor | undefined, i: number, n: number): Float32Array {
  return asFloat(t).data.subarray(i * n, (i + 1) * n);
}

if (!haveFixtures) test('scheduler golden fixtures', { skip: skipWithoutFixtures }, () => {});

for (const [file, entry] of Object.entries(index)) {
  const name = CLASSES[entry.scheduler];
  if (!name) continue;
  test(`${file}: ${entry.scheduler} ${JSON.stringify(entry.overrides)}, ${entry.num_inference_steps} steps`, {
    skip: skipWithoutFixtures,
  }, async (t) => {
    const fx = await loadFixture('schedulers', file);
    const s: Scheduler = createScheduler(name, readPyJson(fixture(entry.config_base)), entry.overrides);
    s.setTimesteps(entry.num_inference_steps);

    assert.deepEqual([...s.timesteps], numbers(fx.timesteps), 'timesteps');
    assert.equal(s.initNoiseSigma, entry.init_noise_sigma, 'init_noise_sigma');
    const table = (s as unknown as { alphasCumprod: Float32Array }).alphasCumprod;
    assert.deepEqual(Array.from(table), numbers(fx.alphas_cumprod), 'alphas_cumprod (bit-exact float32)');
    if (fx.sigmas) {
      assert.deepEqual([...(s.sigmas ?? [])], numbers(fx.sigmas), 'sigmas (bit-exact float32)');
    }

    // Free-running trajectory from x_T, exactly as the fixture was made.
    const latent0 = asFloat(fx.latent0).data;
    const n = latent0.length;
    let x: Float32Array = latent0.map((v) => v * s.initNoiseSigma);
    assertClose(undefined, 'x_T', { data: x, shape: [n] }, { data: asFloat(fx.x_T).data, shape: [n] }, TOL);
    let exact = 0;
    let worst = 0;
    const eta = entry.step_kwargs.eta;
    for (let i = 0; i < s.timesteps.length; i++) {
      const ts = s.timesteps[i]!;
      const xin = s.scaleModelInput(x, ts);
      assertClose(
        undefined,
        `step ${i} scaled_model_input`,
        vec(xin),
        vec(row(fx.scaled_model_inputs, i, n)),
        TOL,
      );
      const r = s.step(row(fx.model_outputs, i, n), ts, x, eta === undefined ? {} : { eta });
      const ref = row(fx.prev_samples, i, n);
      const c = assertClose(undefined, `step ${i} prev_sample`, vec(r.prevSample), vec(ref), TOL);
      worst = Math.max(worst, c.relL2);
      exact += r.prevSample.filter((v, k) => v === ref[k]).length;
      if (entry.has_pred_original_samples) {
        assert.ok(r.predOriginalSample, 'pred_original_sample returned');
        const x0 = row(fx.pred_original_samples, i, n);
        assertClose(undefined, `step ${i} pred_original_sample`, vec(r.predOriginalSample), vec(x0), TOL);
      }
      x = r.prevSample;
    }
    const total = n * s.timesteps.length;
    t.diagnostic(
      `worst prev_sample rel L2 ${worst.toExponential(2)}; ${exact}/${total} values bit-identical`,
    );
    // What we achieve today: every value is the float32 torch computed. Keep it that way.
    assert.equal(exact, total, 'prev_samples bit-identical to torch');
    assert.equal(compare(x, row(fx.prev_samples, s.timesteps.length - 1, n)).maxAbs, 0);
  });
}

function vec(data: Float32Array) {
  return { data, shape: [data.length] };
}
