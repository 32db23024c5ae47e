// Config reading: diffusers 0.24 defaults, strict rejection of what we do not implement, ignored keys listed.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fixture, skipWithoutFixtures } from '../../test/helpers/fixtures.js';
import { DDIMScheduler } from './ddim.js';
import { DPMSolverMultistepScheduler } from './dpm-solver-multistep.js';
import { EulerDiscreteScheduler } from './euler-discrete.js';
import { PNDMScheduler } from './pndm.js';
import {
  createScheduler,
  parseDDIMConfig,
  parseDPMSolverConfig,
  parseEulerConfig,
  parseSchedulerName,
  type SchedulerName,
  schedulerFromConfig,
} from './scheduler.js';

const SDXL = {
  _class_name: 'EulerDiscreteScheduler',
  _diffusers_version: '0.19.0.dev0',
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  clip_sample: false,
  interpolation_type: 'linear',
  num_train_timesteps: 1000,
  prediction_type: 'epsilon',
  sample_max_value: 1.0,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  timestep_spacing: 'leading',
  trained_betas: null,
  use_karras_sigmas: false,
};

const ALL: SchedulerName[] = ['ddim', 'euler', 'dpm-solver', 'pndm'];

/** Asserts that building `name` from `config` fails with a message containing every fragment. */
function rejects(name: SchedulerName, config: Record<string, unknown>, ...fragments: string[]): void {
  assert.throws(
    () => createScheduler(name, config),
    (e: unknown) => {
      assert.ok(e instanceof Error);
      for (const f of fragments) assert.ok(e.message.includes(f), `"${e.message}" should mention ${f}`);
      return true;
    },
  );
}

test('the real SDXL config file builds all three schedulers', { skip: skipWithoutFixtures }, () => {
  const path = fixture('configs', 'stable-diffusion-xl-base-1.0', 'scheduler', 'scheduler_config.json');
  const config = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  assert.ok(schedulerFromConfig(config) instanceof EulerDiscreteScheduler);
  for (const name of ALL) assert.equal(createScheduler(name, config).name, name);
});

test('diffusers 0.24 defaults per class', () => {
  const ddim = parseDDIMConfig({}).config;
  assert.equal(ddim.betaSchedule, 'linear');
  assert.equal(ddim.betaStart, 0.0001);
  assert.equal(ddim.clipSample, true);
  assert.equal(ddim.setAlphaToOne, true);
  assert.equal(ddim.timestepSpacing, 'leading');
  assert.equal(ddim.stepsOffset, 0);
  assert.equal(parseEulerConfig({}).config.timestepSpacing, 'linspace');
  const dpm = parseDPMSolverConfig({}).config;
  assert.equal(dpm.timestepSpacing, 'linspace');
  assert.equal(dpm.solverOrder, 2);
  assert.equal(dpm.algorithmType, 'dpmsolver++');
  assert.equal(dpm.solverType, 'midpoint');
  assert.equal(dpm.lowerOrderFinal, true);
  assert.equal(dpm.lambdaMinClipped, -Infinity);
  assert.equal(dpm.finalSigmasType, 'sigma_min');
});

test('keys a class does not use are ignored and listed; bookkeeping keys are not', () => {
  assert.deepEqual([...createScheduler('euler', SDXL).ignoredConfigKeys].sort(), [
    'clip_sample',
    'sample_max_value',
    'set_alpha_to_one',
    'skip_prk_steps',
  ]);
  assert.deepEqual([...createScheduler('ddim', SDXL).ignoredConfigKeys].sort(), [
    'interpolation_type',
    'skip_prk_steps',
    'use_karras_sigmas',
  ]);
  const dpm = createScheduler('dpm-solver', { ...SDXL, some_future_key: 3 });
  assert.ok(dpm.ignoredConfigKeys.includes('some_future_key'));
  assert.ok(!dpm.ignoredConfigKeys.includes('_class_name'));
});

test('overrides win over the config', () => {
  const s = createScheduler('euler', SDXL, { use_karras_sigmas: true, timestep_spacing: 'trailing' });
  assert.ok(s instanceof EulerDiscreteScheduler);
  assert.equal(s.config.useKarrasSigmas, true);
  assert.equal(s.config.timestepSpacing, 'trailing');
});

test('schedulerFromConfig picks the class and names the supported ones for others', () => {
  assert.ok(schedulerFromConfig({ ...SDXL, _class_name: 'DDIMScheduler' }) instanceof DDIMScheduler);
  const dpm = schedulerFromConfig({ ...SDXL, _class_name: 'DPMSolverMultistepScheduler' });
  assert.ok(dpm instanceof DPMSolverMultistepScheduler);
  assert.ok(schedulerFromConfig({ ...SDXL, _class_name: 'PNDMScheduler' }) instanceof PNDMScheduler);
  assert.throws(
    () => schedulerFromConfig({ ...SDXL, _class_name: 'LMSDiscreteScheduler' }),
    /"LMSDiscreteScheduler" is not supported; supported: DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler, PNDMScheduler/,
  );
  assert.throws(() => schedulerFromConfig({}), /_class_name undefined is not supported/);
});

test('scheduler names from option strings', () => {
  assert.equal(parseSchedulerName('dpm-solver'), 'dpm-solver');
  assert.equal(parseSchedulerName('EulerDiscreteScheduler'), 'euler');
  assert.equal(parseSchedulerName('pndm'), 'pndm');
  assert.throws(
    () => parseSchedulerName('lms'),
    /unknown scheduler "lms"; supported: ddim, euler, dpm-solver, pndm/,
  );
});

test('unsupported values of shared keys name the key, the value and what is supported', () => {
  for (const name of ALL) {
    rejects(
      name,
      { ...SDXL, beta_schedule: 'squaredcos_cap_v2' },
      '"beta_schedule"',
      'squaredcos_cap_v2',
      'linear, scaled_linear',
    );
    rejects(
      name,
      { ...SDXL, timestep_spacing: 'uniform' },
      '"timestep_spacing"',
      'uniform',
      'leading, trailing, linspace',
    );
    rejects(
      name,
      { ...SDXL, prediction_type: 'flow' },
      '"prediction_type"',
      'flow',
      'epsilon, v_prediction, sample',
    );
    rejects(name, { ...SDXL, num_train_timesteps: 999.5 }, '"num_train_timesteps"', '999.5', 'integer');
    rejects(name, { ...SDXL, steps_offset: '1' }, '"steps_offset"', '"1"');
    rejects(name, { ...SDXL, beta_start: null }, '"beta_start"', 'null', 'a number');
    rejects(name, { ...SDXL, trained_betas: [0.1, 0.2] }, '"trained_betas"', '1000 values');
  }
});

test('unsupported per-class options are rejected by name', () => {
  rejects('ddim', { ...SDXL, thresholding: true }, '"thresholding"', 'true', 'dynamic thresholding');
  rejects('ddim', { ...SDXL, rescale_betas_zero_snr: true }, '"rescale_betas_zero_snr"');
  rejects('ddim', { ...SDXL, clip_sample: 'yes' }, '"clip_sample"', 'true or false');
  rejects(
    'euler',
    { ...SDXL, interpolation_type: 'log_linear' },
    '"interpolation_type"',
    'log_linear',
    'linear',
  );
  rejects(
    'euler',
    { ...SDXL, timestep_type: 'continuous', prediction_type: 'v_prediction' },
    'timestep_type',
  );
  rejects(
    'dpm-solver',
    { ...SDXL, algorithm_type: 'sde-dpmsolver++' },
    '"algorithm_type"',
    'sde-dpmsolver++',
  );
  rejects('dpm-solver', { ...SDXL, solver_type: 'euler' }, '"solver_type"', 'euler');
  rejects('dpm-solver', { ...SDXL, solver_order: 4 }, '"solver_order"', '4', '1, 2 or 3');
  rejects('dpm-solver', { ...SDXL, solver_order: 0 }, '"solver_order"', '0');
  rejects('dpm-solver', { ...SDXL, thresholding: true }, '"thresholding"');
  rejects('dpm-solver', { ...SDXL, use_lu_lambdas: true }, '"use_lu_lambdas"');
  rejects('dpm-solver', { ...SDXL, variance_type: 'learned_range' }, '"variance_type"', 'learned_range');
  rejects(
    'dpm-solver',
    { ...SDXL, final_sigmas_type: 'denoise_to_zero' },
    '"final_sigmas_type"',
    'sigma_min, zero',
  );
});

test('values diffusers maps instead of rejecting', () => {
  const p = parseDPMSolverConfig({
    algorithm_type: 'deis',
    solver_type: 'bh2',
    lambda_min_clipped: null,
  }).config;
  assert.equal(p.algorithmType, 'dpmsolver++');
  assert.equal(p.solverType, 'midpoint');
  assert.equal(p.lambdaMinClipped, -Infinity);
  // Allowed Euler combination: continuous timesteps only change v-prediction models in 0.24.
  assert.equal(createScheduler('euler', { ...SDXL, timestep_type: 'continuous' }).name, 'euler');
});

test('trained_betas replace the beta schedule', () => {
  const betas = Array.from({ length: 10 }, (_, i) => 0.01 * (i + 1));
  const s = createScheduler('ddim', {
    num_train_timesteps: 10,
    trained_betas: betas,
    beta_schedule: 'linear',
  });
  assert.ok(s instanceof DDIMScheduler);
  let acc = 1;
  for (let i = 0; i < 10; i++) {
    acc *= 1 - Math.fround(betas[i]!);
    assert.ok(Math.abs(s.alphasCumprod[i]! - acc) <= 1e-7 * acc, `alphas_cumprod[${i}]`);
  }
});
