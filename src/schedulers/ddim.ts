// DDIM (Song et al. 2020) with the arithmetic of diffusers 0.24 `DDIMScheduler` on float32 torch tensors:
// every product and sum is rounded to float32 in the same order, so results match it to the last bit or so.
import {
  checkInferenceSteps,
  makeAlphasCumprod,
  makeBetas,
  type NoiseScheduleConfig,
  spacedTimesteps,
  type TimestepSpacing,
} from './noise-schedule.js';
import { randn } from './random.js';
import type { PredictionType, Scheduler, StepOptions, StepResult } from './scheduler.js';

const f32 = Math.fround;

export interface DDIMConfig extends NoiseScheduleConfig {
  timestepSpacing: TimestepSpacing;
  stepsOffset: number;
  predictionType: PredictionType;
  clipSample: boolean;
  clipSampleRange: number;
  /** The "previous" ᾱ of the last step: 1, or ᾱ at t = 0. */
  setAlphaToOne: boolean;
}

export class DDIMScheduler implements Scheduler {
  readonly name = 'ddim' as const;
  readonly order = 1;
  readonly initNoiseSigma = 1;
  readonly alphasCumprod: Float32Array;
  private readonly finalAlphaCumprod: number;
  private numInferenceSteps = 0;
  private ts: number[] = [];

  constructor(
    readonly config: DDIMConfig,
    readonly ignoredConfigKeys: readonly string[] = [],
  ) {
    this.alphasCumprod = makeAlphasCumprod(makeBetas(config));
    this.finalAlphaCumprod = config.setAlphaToOne ? 1 : this.alphasCumprod[0]!;
  }

  get timesteps(): readonly number[] {
    return this.ts;
  }

  setTimesteps(numInferenceSteps: number): void {
    const n = this.config.numTrainTimesteps;
    checkInferenceSteps('DDIM', numInferenceSteps, n);
    this.numInferenceSteps = numInferenceSteps;
    const c = this.config;
    this.ts = spacedTimesteps(c.timestepSpacing, n, numInferenceSteps, c.stepsOffset, true);
  }

  scaleModelInput(sample: Float32Array, _timestep: number): Float32Array {
    return sample;
  }

  reset(): void {}

  step(
    modelOutput: Float32Array,
    timestep: number,
    sample: Float32Array,
    opts: StepOptions = {},
  ): StepResult {
    if (this.numInferenceSteps === 0) throw new Error('DDIM: call setTimesteps before step');
    if (modelOutput.length !== sample.length) {
      throw new Error(
        `DDIM.step: model output has ${modelOutput.length} values, sample has ${sample.length}`,
      );
    }
    const ac = this.alphasCumprod;
    if (!Number.isInteger(timestep) || timestep < 0 || timestep >= ac.length) {
      throw new Error(`DDIM.step: timestep ${timestep} is not an integer in [0, ${ac.length})`);
    }
    const eta = opts.eta ?? 0;
    // diffusers uses num_train // num_inference_steps whatever the spacing.
    const prevT = timestep - Math.floor(this.config.numTrainTimesteps / this.numInferenceSteps);
    const alphaT = ac[timestep]!;
    const alphaPrev = prevT >= 0 ? ac[prevT]! : this.finalAlphaCumprod;
    const betaT = f32(1 - alphaT);
    const sqrtA = f32(Math.sqrt(alphaT));
    const sqrtB = f32(Math.sqrt(betaT));

    const n = sample.length;
    const x0 = new Float32Array(n);
    const eps = new Float32Array(n);
    switch (this.config.predictionType) {
      case 'epsilon':
        for (let i = 0; i < n; i++) x0[i] = f32(sample[i]! - f32(sqrtB * modelOutput[i]!)) / sqrtA;
        eps.set(modelOutput);
        break;
      case 'sample':
        x0.set(modelOutput);
        for (let i = 0; i < n; i++) eps[i] = f32(sample[i]! - f32(sqrtA * x0[i]!)) / sqrtB;
        break;
      case 'v_prediction':
        for (let i = 0; i < n; i++) {
          x0[i] = f32(sqrtA * sample[i]!) - f32(sqrtB * modelOutput[i]!);
          eps[i] = f32(sqrtA * modelOutput[i]!) + f32(sqrtB * sample[i]!);
        }
        break;
    }
    if (this.config.clipSample) {
      const r = f32(this.config.clipSampleRange);
      for (let i = 0; i < n; i++) x0[i] = Math.min(r, Math.max(-r, x0[i]!));
    }

    // σ_t = η · sqrt((1 - ᾱ_prev) / (1 - ᾱ_t) · (1 - ᾱ_t / ᾱ_prev)), all float32 scalars.
    const betaPrev = f32(1 - alphaPrev);
    const variance = f32(f32(betaPrev / betaT) * f32(1 - f32(alphaT / alphaPrev)));
    const std = f32(f32(eta) * f32(Math.sqrt(variance)));
    const dirCoef = f32(Math.sqrt(f32(betaPrev - f32(std * std))));
    const sqrtAPrev = f32(Math.sqrt(alphaPrev));
    const prev = new Float32Array(n);
    for (let i = 0; i < n; i++) prev[i] = f32(sqrtAPrev * x0[i]!) + f32(dirCoef * eps[i]!);

    if (eta > 0) {
      if (!opts.generator) throw new Error('DDIM.step: eta > 0 needs a generator for the variance noise');
      const noise = randn([n], opts.generator);
      for (let i = 0; i < n; i++) prev[i] = prev[i]! + f32(std * noise[i]!);
    }
    return { prevSample: prev, predOriginalSample: x0 };
  }
}
