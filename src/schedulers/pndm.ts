// PNDM (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models"), SD 1.x's default scheduler, with
// the arithmetic of diffusers 0.24 `PNDMScheduler` on float32 torch tensors. Two phases: optional
// Runge-Kutta warm-up steps (PRK, four model calls per step), then the linear multistep method (PLMS), which
// combines up to four past noise predictions. With `skip_prk_steps` (SD 1.5's config) PLMS starts at once,
// and the second model call repeats the first timestep to get a second-order start.
import {
  checkInferenceSteps,
  makeAlphasCumprod,
  makeBetas,
  type NoiseScheduleConfig,
  spacedTimesteps,
  type TimestepSpacing,
} from './noise-schedule.js';
import type { Scheduler, StepResult } from './scheduler.js';

const f32 = Math.fround;

export interface PNDMConfig extends NoiseScheduleConfig {
  timestepSpacing: TimestepSpacing;
  stepsOffset: number;
  predictionType: 'epsilon' | 'v_prediction';
  /** Start with PLMS directly (true in SD 1.x configs); false runs the PRK warm-up first. */
  skipPrkSteps: boolean;
  /** The "previous" ᾱ of the last step: 1, or ᾱ at t = 0. */
  setAlphaToOne: boolean;
}

/** diffusers' `pndm_order`: PLMS's order, and the number of PRK steps. */
const PNDM_ORDER = 4;

export class PNDMScheduler implements Scheduler {
  readonly name = 'pndm' as const;
  readonly order = 1;
  readonly initNoiseSigma = 1;
  readonly alphasCumprod: Float32Array;
  private readonly finalAlphaCumprod: number;
  private numInferenceSteps = 0;
  private prkTimesteps: number[] = [];
  private ts: number[] = [];
  // Solver state, as diffusers keeps it.
  private ets: Float32Array[] = [];
  private counter = 0;
  private curModelOutput: Float32Array | undefined;
  private curSample: Float32Array | undefined;

  constructor(
    readonly config: PNDMConfig,
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
    checkInferenceSteps('PNDM', numInferenceSteps, n);
    this.numInferenceSteps = numInferenceSteps;
    const c = this.config;
    // Ascending, as diffusers' `_timesteps`.
    const base = spacedTimesteps(c.timestepSpacing, n, numInferenceSteps, c.stepsOffset, true).reverse();
    if (c.skipPrkSteps) {
      this.prkTimesteps = [];
      // Every timestep but the last, the second-to-last again, then the last; descending.
      this.ts = [...base.slice(0, -1), ...base.slice(-2, -1), ...base.slice(-1)].reverse();
    } else {
      // The top PNDM_ORDER timesteps, each with its half step above, every inner point visited twice.
      const half = Math.floor(Math.floor(n / numInferenceSteps) / 2);
      const top = base.slice(-PNDM_ORDER).flatMap((t) => [t, t + half]);
      const prk = top
        .slice(0, -1)
        .flatMap((t) => [t, t])
        .slice(1, -1);
      this.prkTimesteps = prk.reverse();
      this.ts = [...this.prkTimesteps, ...base.slice(0, -3).reverse()];
    }
    this.reset();
  }

  scaleModelInput(sample: Float32Array, _timestep: number): Float32Array {
    return sample;
  }

  reset(): void {
    this.ets = [];
    this.counter = 0;
    this.curModelOutput = undefined;
    this.curSample = undefined;
  }

  step(modelOutput: Float32Array, timestep: number, sample: Float32Array): StepResult {
    if (this.numInferenceSteps === 0) throw new Error('PNDM: call setTimesteps before step');
    if (modelOutput.length !== sample.length) {
      throw new Error(
        `PNDM.step: model output has ${modelOutput.length} values, sample has ${sample.length}`,
      );
    }
    if (!Number.isInteger(timestep)) throw new Error(`PNDM.step: timestep ${timestep} is not an integer`);
    const prev =
      this.counter < this.prkTimesteps.length && !this.config.skipPrkSteps
        ? this.stepPrk(modelOutput, timestep, sample)
        : this.stepPlms(modelOutput, timestep, sample);
    this.counter += 1;
    return { prevSample: prev };
  }

  private stride(): number {
    return Math.floor(this.config.numTrainTimesteps / this.numInferenceSteps);
  }

  /** One of the four model calls of a Runge-Kutta step from the sample the step started at. */
  private stepPrk(modelOutput: Float32Array, timestep: number, sample: Float32Array): Float32Array {
    const phase = this.counter % 4;
    const diffToPrev = this.counter % 2 ? 0 : Math.floor(this.stride() / 2);
    const prevT = timestep - diffToPrev;
    const t = this.prkTimesteps[this.counter - phase]!;
    let output = modelOutput;
    if (phase === 0) {
      this.curModelOutput = axpy(f32(1 / 6), modelOutput, this.curModelOutput);
      this.ets.push(modelOutput);
      this.curSample = sample;
    } else if (phase === 1 || phase === 2) {
      this.curModelOutput = axpy(f32(1 / 3), modelOutput, this.curModelOutput);
    } else {
      output = axpy(f32(1 / 6), modelOutput, this.curModelOutput);
      this.curModelOutput = undefined;
    }
    return this.prevSample(this.curSample ?? sample, t, prevT, output);
  }

  /** A linear multistep update from the last (up to) four noise predictions. */
  private stepPlms(modelOutput: Float32Array, timestep: number, sample: Float32Array): Float32Array {
    if (!this.config.skipPrkSteps && this.ets.length < 3) {
      throw new Error('PNDM: PLMS steps need the 12 PRK model calls first (call step once per timestep)');
    }
    let t = timestep;
    let prevT = timestep - this.stride();
    if (this.counter !== 1) {
      this.ets = this.ets.slice(-3);
      this.ets.push(modelOutput);
    } else {
      // The repeated timestep: redo the first step from its start with the averaged prediction.
      prevT = timestep;
      t = timestep + this.stride();
    }
    const e = this.ets;
    const k = e.length;
    const n = modelOutput.length;
    const out = new Float32Array(n);
    let from = sample;
    if (k === 1 && this.counter === 0) {
      out.set(modelOutput);
      this.curSample = sample;
    } else if (k === 1 && this.counter === 1) {
      for (let i = 0; i < n; i++) out[i] = f32(modelOutput[i]! + e[0]![i]!) / 2;
      from = this.curSample ?? sample;
      this.curSample = undefined;
    } else if (k === 2) {
      const [a, b] = [e[1]!, e[0]!];
      for (let i = 0; i < n; i++) out[i] = f32(f32(3 * a[i]!) - b[i]!) / 2;
    } else if (k === 3) {
      const [a, b, c] = [e[2]!, e[1]!, e[0]!];
      for (let i = 0; i < n; i++) {
        out[i] = f32(f32(f32(f32(23 * a[i]!) - f32(16 * b[i]!)) + f32(5 * c[i]!)) / 12);
      }
    } else {
      const [a, b, c, d] = [e[3]!, e[2]!, e[1]!, e[0]!];
      const w = f32(1 / 24);
      for (let i = 0; i < n; i++) {
        const s = f32(f32(f32(f32(55 * a[i]!) - f32(59 * b[i]!)) + f32(37 * c[i]!)) - f32(9 * d[i]!));
        out[i] = f32(w * s);
      }
    }
    return this.prevSample(from, t, prevT, out);
  }

  /** PNDM's formula (9): x_{t-δ} from x_t and the noise prediction, in diffusers' float32 order. */
  private prevSample(
    sample: Float32Array,
    t: number,
    prevT: number,
    modelOutput: Float32Array,
  ): Float32Array {
    const ac = this.alphasCumprod;
    if (t < 0 || t >= ac.length || prevT >= ac.length) {
      throw new Error(`PNDM.step: timestep ${t} (previous ${prevT}) is outside [0, ${ac.length})`);
    }
    const alphaT = ac[t]!;
    const alphaPrev = prevT >= 0 ? ac[prevT]! : this.finalAlphaCumprod;
    const betaT = f32(1 - alphaT);
    const betaPrev = f32(1 - alphaPrev);
    const n = sample.length;
    let eps = modelOutput;
    if (this.config.predictionType === 'v_prediction') {
      const sa = f32(Math.sqrt(alphaT));
      const sb = f32(Math.sqrt(betaT));
      eps = new Float32Array(n);
      for (let i = 0; i < n; i++) eps[i] = f32(sa * modelOutput[i]!) + f32(sb * sample[i]!);
    }
    const sampleCoeff = f32(Math.sqrt(f32(alphaPrev / alphaT)));
    const denom = f32(
      f32(alphaT * f32(Math.sqrt(betaPrev))) + f32(Math.sqrt(f32(f32(alphaT * betaT) * alphaPrev))),
    );
    const diff = f32(alphaPrev - alphaT);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      out[i] = f32(sampleCoeff * sample[i]!) - f32(f32(diff * eps[i]!) / denom);
    }
    return out;
  }
}

/** a·x + y (y absent: a·x), rounded to float32 per element as torch does. */
function axpy(a: number, x: Float32Array, y: Float32Array | undefined): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = y ? f32(y[i]! + f32(a * x[i]!)) : f32(a * x[i]!);
  return out;
}
