// The scheduler interface, strict reading of diffusers' scheduler_config.json, and the factory.
import { type DDIMConfig, DDIMScheduler } from './ddim.js';
import {
  type AlgorithmType,
  type DPMSolverConfig,
  DPMSolverMultistepScheduler,
  type FinalSigmasType,
  type SolverType,
} from './dpm-solver-multistep.js';
import { type EulerConfig, EulerDiscreteScheduler } from './euler-discrete.js';
import type { BetaSchedule, NoiseScheduleConfig, TimestepSpacing } from './noise-schedule.js';
import { type PNDMConfig, PNDMScheduler } from './pndm.js';
import type { Generator } from './random.js';

export type SchedulerName = 'ddim' | 'euler' | 'dpm-solver' | 'pndm';
export type PredictionType = 'epsilon' | 'v_prediction' | 'sample';

export interface StepResult {
  prevSample: Float32Array;
  predOriginalSample?: Float32Array;
}

export interface StepOptions {
  /** Noise source for stochastic steps (DDIM with eta > 0); Euler draws (and discards) noise like diffusers. */
  generator?: Generator;
  /** DDIM only: weight of the added noise (0 = deterministic DDIM). */
  eta?: number;
}

/** A diffusers-style scheduler: stateful (step index, solver history); call `reset()` or make a new one per run. */
export interface Scheduler {
  readonly name: SchedulerName;
  /** After setTimesteps: the model is called once per entry, in order. */
  readonly timesteps: readonly number[];
  readonly initNoiseSigma: number;
  /** Euler and DPM-Solver: one more entry than `timesteps`. */
  readonly sigmas?: readonly number[];
  /** diffusers' class attribute `order` (1 for all of ours). */
  readonly order: number;
  /** Config keys this scheduler does not use (ignored, as diffusers ignores them). */
  readonly ignoredConfigKeys: readonly string[];
  setTimesteps(numInferenceSteps: number): void;
  scaleModelInput(sample: Float32Array, timestep: number): Float32Array;
  step(modelOutput: Float32Array, timestep: number, sample: Float32Array, opts?: StepOptions): StepResult;
  /** Forgets the step index and solver history; keeps the timesteps. */
  reset(): void;
}

// ---------------------------------------------------------------- strict config reading

const BOOKKEEPING = new Set(['_class_name', '_diffusers_version', '_use_default_values', '_name_or_path']);

/** Reads scheduler_config.json values with type checks; records which keys were read. */
export class SchedulerConfigReader {
  private readonly read = new Set<string>();

  constructor(
    readonly what: string,
    private readonly json: Readonly<Record<string, unknown>>,
  ) {}

  private raw(key: string): unknown {
    this.read.add(key);
    return this.json[key];
  }

  private bad(key: string, v: unknown, expected: string): never {
    throw new Error(`${this.what}: "${key}" = ${JSON.stringify(v)} is not supported; expected ${expected}`);
  }

  number(key: string, fallback: number): number {
    const v = this.raw(key);
    if (v === undefined) return fallback;
    if (typeof v !== 'number' || Number.isNaN(v)) this.bad(key, v, 'a number');
    return v;
  }

  /** A number where null means the fallback too (e.g. -inf, which JSON cannot spell). */
  numberOrNull(key: string, fallback: number): number {
    if (this.raw(key) === null) return fallback;
    return this.number(key, fallback);
  }

  optionalNumber(key: string): number | undefined {
    const v = this.raw(key);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v)) this.bad(key, v, 'a number or null');
    return v;
  }

  int(key: string, fallback: number, min = 0): number {
    const v = this.number(key, fallback);
    if (!Number.isInteger(v) || v < min) this.bad(key, v, `an integer >= ${min}`);
    return v;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.raw(key);
    if (v === undefined) return fallback;
    if (typeof v !== 'boolean') this.bad(key, v, 'true or false');
    return v;
  }

  oneOf<T extends string>(key: string, allowed: readonly T[], fallback: T): T {
    const v = this.raw(key);
    if (v === undefined) return fallback;
    if (typeof v !== 'string' || !allowed.includes(v as T)) this.bad(key, v, `one of ${allowed.join(', ')}`);
    return v as T;
  }

  /** A key whose only supported value is `accepted` (or absent / null). */
  only(key: string, accepted: unknown, why: string): void {
    const v = this.raw(key);
    if (v === undefined || v === null || v === accepted) return;
    this.bad(key, v, `${JSON.stringify(accepted)} (${why})`);
  }

  numberList(key: string): number[] | undefined {
    const v = this.raw(key);
    if (v === undefined || v === null) return undefined;
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) {
      this.bad(key, v, 'a list of numbers or null');
    }
    return v as number[];
  }

  /** Keys present in the config that nothing read. */
  ignoredKeys(): string[] {
    return Object.keys(this.json).filter((k) => !this.read.has(k) && !BOOKKEEPING.has(k));
  }

  /** The beta / timestep fields every scheduler has; defaults are diffusers' per class. */
  noiseSchedule(defaults: {
    betaStart: number;
    betaEnd: number;
    betaSchedule: BetaSchedule;
  }): NoiseScheduleConfig {
    const numTrainTimesteps = this.int('num_train_timesteps', 1000, 2);
    const trainedBetas = this.numberList('trained_betas');
    if (trainedBetas && trainedBetas.length !== numTrainTimesteps) {
      this.bad(
        'trained_betas',
        `[${trainedBetas.length} values]`,
        `${numTrainTimesteps} values (num_train_timesteps)`,
      );
    }
    return {
      numTrainTimesteps,
      betaStart: this.number('beta_start', defaults.betaStart),
      betaEnd: this.number('beta_end', defaults.betaEnd),
      betaSchedule: this.oneOf('beta_schedule', ['linear', 'scaled_linear'] as const, defaults.betaSchedule),
      trainedBetas,
    };
  }

  spacing(fallback: TimestepSpacing): { timestepSpacing: TimestepSpacing; stepsOffset: number } {
    return {
      timestepSpacing: this.oneOf('timestep_spacing', ['leading', 'trailing', 'linspace'] as const, fallback),
      stepsOffset: this.int('steps_offset', 0),
    };
  }

  predictionType(): PredictionType {
    return this.oneOf('prediction_type', ['epsilon', 'v_prediction', 'sample'] as const, 'epsilon');
  }

  /** Dynamic thresholding (Imagen) is for pixel-space models; we do not implement it. */
  noThresholding(): void {
    this.only(
      'thresholding',
      false,
      'dynamic thresholding is not implemented; it is meant for pixel-space models',
    );
    this.number('dynamic_thresholding_ratio', 0.995);
    this.number('sample_max_value', 1);
  }
}

// ---------------------------------------------------------------- per-class configs (diffusers 0.24 defaults)

const DIFFUSERS_BETAS = { betaStart: 0.0001, betaEnd: 0.02, betaSchedule: 'linear' } as const;

export function parseDDIMConfig(json: Readonly<Record<string, unknown>>, what = 'DDIMScheduler config') {
  const r = new SchedulerConfigReader(what, json);
  r.noThresholding();
  r.only('rescale_betas_zero_snr', false, 'zero-terminal-SNR rescaling is not implemented');
  const config: DDIMConfig = {
    ...r.noiseSchedule(DIFFUSERS_BETAS),
    ...r.spacing('leading'),
    predictionType: r.predictionType(),
    clipSample: r.bool('clip_sample', true),
    clipSampleRange: r.number('clip_sample_range', 1),
    setAlphaToOne: r.bool('set_alpha_to_one', true),
  };
  return { config, ignoredKeys: r.ignoredKeys() };
}

export function parseEulerConfig(
  json: Readonly<Record<string, unknown>>,
  what = 'EulerDiscreteScheduler config',
) {
  const r = new SchedulerConfigReader(what, json);
  r.oneOf('interpolation_type', ['linear'] as const, 'linear');
  const predictionType = r.predictionType();
  const timestepType = r.oneOf('timestep_type', ['discrete', 'continuous'] as const, 'discrete');
  if (timestepType === 'continuous' && predictionType === 'v_prediction') {
    throw new Error(
      `${what}: "timestep_type" = "continuous" with v_prediction is not supported; expected "discrete"`,
    );
  }
  const config: EulerConfig = {
    ...r.noiseSchedule(DIFFUSERS_BETAS),
    ...r.spacing('linspace'),
    predictionType,
    useKarrasSigmas: r.bool('use_karras_sigmas', false),
    sigmaMin: r.optionalNumber('sigma_min'),
    sigmaMax: r.optionalNumber('sigma_max'),
  };
  return { config, ignoredKeys: r.ignoredKeys() };
}

export function parseDPMSolverConfig(
  json: Readonly<Record<string, unknown>>,
  what = 'DPMSolverMultistepScheduler config',
) {
  const r = new SchedulerConfigReader(what, json);
  r.noThresholding();
  r.only('use_lu_lambdas', false, 'Lu lambdas are not implemented');
  r.only('variance_type', null, 'learned variance outputs are not supported');
  const solverOrder = r.int('solver_order', 2, 1);
  if (solverOrder > 3)
    throw new Error(`${what}: "solver_order" = ${solverOrder} is not supported; expected 1, 2 or 3`);
  // diffusers maps these foreign values (from DEIS / UniPC configs) instead of failing.
  let algorithmType = r.oneOf('algorithm_type', ['dpmsolver++', 'dpmsolver', 'deis'] as const, 'dpmsolver++');
  if (algorithmType === 'deis') algorithmType = 'dpmsolver++';
  let solverType = r.oneOf('solver_type', ['midpoint', 'heun', 'logrho', 'bh1', 'bh2'] as const, 'midpoint');
  if (solverType !== 'heun') solverType = 'midpoint';
  const config: DPMSolverConfig = {
    ...r.noiseSchedule(DIFFUSERS_BETAS),
    ...r.spacing('linspace'),
    predictionType: r.predictionType(),
    solverOrder,
    algorithmType: algorithmType as AlgorithmType,
    solverType: solverType as SolverType,
    lowerOrderFinal: r.bool('lower_order_final', true),
    eulerAtFinal: r.bool('euler_at_final', false),
    useKarrasSigmas: r.bool('use_karras_sigmas', false),
    lambdaMinClipped: r.numberOrNull('lambda_min_clipped', -Infinity),
    // Not a 0.24 option: 0.24 behaves as "sigma_min". Later diffusers versions default to "zero".
    finalSigmasType: r.oneOf(
      'final_sigmas_type',
      ['sigma_min', 'zero'] as const,
      'sigma_min',
    ) as FinalSigmasType,
    // 0.24 reads these in its Karras conversion when the config carries them.
    sigmaMin: r.optionalNumber('sigma_min'),
    sigmaMax: r.optionalNumber('sigma_max'),
  };
  return { config, ignoredKeys: r.ignoredKeys() };
}

export function parsePNDMConfig(json: Readonly<Record<string, unknown>>, what = 'PNDMScheduler config') {
  const r = new SchedulerConfigReader(what, json);
  const predictionType = r.predictionType();
  if (predictionType === 'sample') {
    throw new Error(
      `${what}: "prediction_type" = "sample" is not supported; expected epsilon or v_prediction`,
    );
  }
  const config: PNDMConfig = {
    ...r.noiseSchedule(DIFFUSERS_BETAS),
    ...r.spacing('leading'),
    predictionType,
    skipPrkSteps: r.bool('skip_prk_steps', false),
    setAlphaToOne: r.bool('set_alpha_to_one', false),
  };
  return { config, ignoredKeys: r.ignoredKeys() };
}

// ---------------------------------------------------------------- factory

const CLASS_NAMES: Record<string, SchedulerName> = {
  DDIMScheduler: 'ddim',
  EulerDiscreteScheduler: 'euler',
  DPMSolverMultistepScheduler: 'dpm-solver',
  PNDMScheduler: 'pndm',
};

/**
 * A scheduler of the given kind, configured from a parsed scheduler_config.json (any class's, with diffusers'
 * `from_config` semantics: e.g. DPM-Solver from SDXL's Euler config) plus overrides.
 */
export function createScheduler(
  name: SchedulerName,
  config: Readonly<Record<string, unknown>>,
  overrides: Readonly<Record<string, unknown>> = {},
): Scheduler {
  const merged = { ...config, ...overrides };
  switch (name) {
    case 'ddim': {
      const p = parseDDIMConfig(merged);
      return new DDIMScheduler(p.config, p.ignoredKeys);
    }
    case 'euler': {
      const p = parseEulerConfig(merged);
      return new EulerDiscreteScheduler(p.config, p.ignoredKeys);
    }
    case 'dpm-solver': {
      const p = parseDPMSolverConfig(merged);
      return new DPMSolverMultistepScheduler(p.config, p.ignoredKeys);
    }
    case 'pndm': {
      const p = parsePNDMConfig(merged);
      return new PNDMScheduler(p.config, p.ignoredKeys);
    }
    default: {
      const never: never = name;
      throw new Error(`unknown scheduler ${JSON.stringify(never)}; supported: ${SCHEDULER_NAMES.join(', ')}`);
    }
  }
}

export const SCHEDULER_NAMES: readonly SchedulerName[] = ['ddim', 'euler', 'dpm-solver', 'pndm'];

/** The scheduler that config._class_name names. */
export function schedulerFromConfig(
  config: Readonly<Record<string, unknown>>,
  overrides: Readonly<Record<string, unknown>> = {},
): Scheduler {
  const cls = config._class_name;
  const name = typeof cls === 'string' ? CLASS_NAMES[cls] : undefined;
  if (!name) {
    throw new Error(
      `scheduler_config.json: _class_name ${JSON.stringify(cls)} is not supported; supported: ` +
        `${Object.keys(CLASS_NAMES).join(', ')} (createScheduler(name, config) uses this config with one of them)`,
    );
  }
  return createScheduler(name, config, overrides);
}

/** A scheduler name from a CLI / option string; diffusers class names are accepted too. */
export function parseSchedulerName(s: string): SchedulerName {
  if ((SCHEDULER_NAMES as readonly string[]).includes(s)) return s as SchedulerName;
  const byClass = CLASS_NAMES[s];
  if (byClass) return byClass;
  throw new Error(`unknown scheduler ${JSON.stringify(s)}; supported: ${SCHEDULER_NAMES.join(', ')}`);
}
