// Euler (Karras et al. 2022, Algorithm 2 without churn) with the arithmetic of diffusers 0.24
// `EulerDiscreteScheduler`: float32 tables from torch, sigma lists in float64 numpy, steps in float32.
import {
  interpIndex,
  karrasSigmas,
  makeAlphasCumprod,
  makeBetas,
  type NoiseScheduleConfig,
  npLogF32,
  sigmasFromAlphasCumprod,
  sigmaToT,
  spacedTimesteps,
  type TimestepSpacing,
} from './noise-schedule.js';
import type { PredictionType, Scheduler, StepOptions, StepResult } from './scheduler.js';

const f32 = Math.fround;

export interface EulerConfig extends NoiseScheduleConfig {
  timestepSpacing: TimestepSpacing;
  stepsOffset: number;
  predictionType: PredictionType;
  useKarrasSigmas: boolean;
  sigmaMin?: number | undefined;
  sigmaMax?: number | undefined;
}

export class EulerDiscreteScheduler implements Scheduler {
  readonly name = 'euler' as const;
  readonly order = 1;
  readonly alphasCumprod: Float32Array;
  /** σ(t) for every training timestep, ascending in t (float32). */
  private readonly trainSigmas: Float32Array;
  private ts: number[] = [];
  private sig: number[] = [];
  private stepIndex: number | undefined;

  constructor(
    readonly config: EulerConfig,
    readonly ignoredConfigKeys: readonly string[] = [],
  ) {
    this.alphasCumprod = makeAlphasCumprod(makeBetas(config));
    this.trainSigmas = sigmasFromAlphasCumprod(this.alphasCumprod);
  }

  get timesteps(): readonly number[] {
    return this.ts;
  }

  /** float32 sigmas, one per timestep plus a final 0. */
  get sigmas(): readonly number[] {
    return this.sig;
  }

  get initNoiseSigma(): number {
    if (this.sig.length === 0) throw new Error('Euler: call setTimesteps before reading initNoiseSigma');
    const max = Math.max(...this.sig);
    if (this.config.timestepSpacing !== 'leading') return max;
    return f32(Math.sqrt(f32(f32(max * max) + 1)));
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1) {
      throw new Error(`Euler: numInferenceSteps must be a positive integer, got ${numInferenceSteps}`);
    }
    let ts = spacedTimesteps(c.timestepSpacing, c.numTrainTimesteps, numInferenceSteps, c.stepsOffset, false);
    let sigmas = ts.map((t) => interpIndex(t, this.trainSigmas));
    if (c.useKarrasSigmas) {
      sigmas = karrasSigmas(c.sigmaMin ?? sigmas.at(-1)!, c.sigmaMax ?? sigmas[0]!, numInferenceSteps);
      const logSigmas = npLogF32(this.trainSigmas);
      ts = sigmas.map((s) => f32(sigmaToT(s, logSigmas)));
    }
    this.ts = ts;
    this.sig = [...sigmas.map(f32), 0];
    this.stepIndex = undefined;
  }

  reset(): void {
    this.stepIndex = undefined;
  }

  /** Like diffusers: the first call finds the timestep (the second match if it repeats), later calls count. */
  private currentIndex(timestep: number): number {
    if (this.stepIndex === undefined) {
      const hits = this.ts.flatMap((t, i) => (t === timestep ? [i] : []));
      if (hits.length === 0)
        throw new Error(`Euler: timestep ${timestep} is not in the schedule [${this.ts.join(', ')}]`);
      this.stepIndex = hits.length > 1 ? hits[1]! : hits[0]!;
    }
    return this.stepIndex;
  }

  scaleModelInput(sample: Float32Array, timestep: number): Float32Array {
    const sigma = this.sig[this.currentIndex(timestep)]!;
    const d = f32(Math.sqrt(f32(f32(sigma * sigma) + 1)));
    return sample.map((x) => x / d);
  }

  step(
    modelOutput: Float32Array,
    timestep: number,
    sample: Float32Array,
    opts: StepOptions = {},
  ): StepResult {
    if (this.sig.length === 0) throw new Error('Euler: call setTimesteps before step');
    if (modelOutput.length !== sample.length) {
      throw new Error(
        `Euler.step: model output has ${modelOutput.length} values, sample has ${sample.length}`,
      );
    }
    const idx = this.currentIndex(timestep);
    if (idx >= this.ts.length)
      throw new Error(`Euler.step: all ${this.ts.length} steps are done; call reset()`);
    // diffusers draws churn noise on every step even when churn is 0; keep the generator stream in step.
    opts.generator?.randn(modelOutput.length);
    const sigma = this.sig[idx]!;
    const n = sample.length;
    const x0 = new Float32Array(n);
    switch (this.config.predictionType) {
      case 'epsilon':
        for (let i = 0; i < n; i++) x0[i] = sample[i]! - f32(sigma * modelOutput[i]!);
        break;
      case 'sample':
        x0.set(modelOutput);
        break;
      case 'v_prediction': {
        const s2p1 = f32(f32(sigma * sigma) + 1);
        const cOut = f32(-sigma / f32(Math.sqrt(s2p1)));
        for (let i = 0; i < n; i++) x0[i] = f32(modelOutput[i]! * cOut) + f32(sample[i]! / s2p1);
        break;
      }
    }
    const dt = f32(this.sig[idx + 1]! - sigma);
    const prev = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const derivative = f32(f32(sample[i]! - x0[i]!) / sigma);
      prev[i] = sample[i]! + f32(derivative * dt);
    }
    this.stepIndex = idx + 1;
    return { prevSample: prev, predOriginalSample: x0 };
  }
}
