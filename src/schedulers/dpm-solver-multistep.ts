// DPM-Solver / DPM-Solver++ multistep (Lu et al. 2022), orders 1-3, with the arithmetic of diffusers 0.24
// `DPMSolverMultistepScheduler`: float32 scalars and tensors as torch computes them.
import {
  interpIndex,
  karrasSigmas,
  makeAlphasCumprod,
  makeBetas,
  type NoiseScheduleConfig,
  npArange,
  npLinspace,
  npLogF32,
  roundHalfEven,
  sigmasFromAlphasCumprod,
  sigmaToT,
  type TimestepSpacing,
  torchExpf,
  torchLogf,
} from './noise-schedule.js';
import type { PredictionType, Scheduler, StepResult } from './scheduler.js';

const f32 = Math.fround;

export type AlgorithmType = 'dpmsolver++' | 'dpmsolver';
export type SolverType = 'midpoint' | 'heun';
/** What the last step goes to: σ(t=0) (diffusers 0.24) or 0 (a fully denoised x0; later diffusers). */
export type FinalSigmasType = 'sigma_min' | 'zero';

export interface DPMSolverConfig extends NoiseScheduleConfig {
  timestepSpacing: TimestepSpacing;
  stepsOffset: number;
  predictionType: PredictionType;
  solverOrder: number;
  algorithmType: AlgorithmType;
  solverType: SolverType;
  lowerOrderFinal: boolean;
  eulerAtFinal: boolean;
  useKarrasSigmas: boolean;
  lambdaMinClipped: number;
  finalSigmasType: FinalSigmasType;
  sigmaMin?: number | undefined;
  sigmaMax?: number | undefined;
}

/** α_t, σ_t and λ_t = log α_t - log σ_t of a VP schedule point given by σ = σ_t / α_t (float32). */
interface Point {
  alpha: number;
  sigma: number;
  lambda: number;
}

function point(s: number): Point {
  const alpha = f32(1 / f32(Math.sqrt(f32(f32(s * s) + 1))));
  const sigma = f32(s * alpha);
  return { alpha, sigma, lambda: f32(torchLogf(alpha) - torchLogf(sigma)) };
}

export class DPMSolverMultistepScheduler implements Scheduler {
  readonly name = 'dpm-solver' as const;
  readonly order = 1;
  readonly initNoiseSigma = 1;
  readonly alphasCumprod: Float32Array;
  private readonly trainSigmas: Float32Array;
  private ts: number[] = [];
  private sig: number[] = [];
  private stepIndex: number | undefined;
  /** The last `solverOrder` converted model outputs, oldest first. */
  private history: (Float32Array | undefined)[] = [];
  private lowerOrderNums = 0;

  constructor(
    readonly config: DPMSolverConfig,
    readonly ignoredConfigKeys: readonly string[] = [],
  ) {
    this.alphasCumprod = makeAlphasCumprod(makeBetas(config));
    this.trainSigmas = sigmasFromAlphasCumprod(this.alphasCumprod);
    this.reset();
  }

  get timesteps(): readonly number[] {
    return this.ts;
  }

  /** float32 sigmas, one per timestep plus the final one. */
  get sigmas(): readonly number[] {
    return this.sig;
  }

  reset(): void {
    this.stepIndex = undefined;
    this.history = new Array(this.config.solverOrder).fill(undefined);
    this.lowerOrderNums = 0;
  }

  /** Timesteps at or above the λ clip (diffusers' searchsorted on the flipped λ table). */
  private lastTimestep(): number {
    const c = this.config;
    if (c.lambdaMinClipped === -Infinity) return c.numTrainTimesteps;
    const ac = this.alphasCumprod;
    let clipped = 0;
    for (let i = ac.length - 1; i >= 0; i--) {
      const lambda = f32(torchLogf(f32(Math.sqrt(ac[i]!))) - torchLogf(f32(Math.sqrt(f32(1 - ac[i]!)))));
      if (lambda >= c.lambdaMinClipped) break;
      clipped++;
    }
    return c.numTrainTimesteps - clipped;
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    const n = numInferenceSteps;
    if (!Number.isInteger(n) || n < 1)
      throw new Error(`DPM-Solver: numInferenceSteps must be a positive integer, got ${n}`);
    const last = this.lastTimestep();
    let ts: number[];
    switch (c.timestepSpacing) {
      case 'linspace':
        ts = npLinspace(0, last - 1, n + 1)
          .map(roundHalfEven)
          .reverse()
          .slice(0, -1);
        break;
      case 'leading': {
        const ratio = Math.floor(last / (n + 1));
        ts = Array.from({ length: n }, (_, i) => (n - i) * ratio + c.stepsOffset);
        break;
      }
      case 'trailing':
        ts = npArange(last, 0, -c.numTrainTimesteps / n).map((t) => roundHalfEven(t) - 1);
        break;
    }
    const train = this.trainSigmas;
    let sigmas: number[];
    if (c.useKarrasSigmas) {
      sigmas = karrasSigmas(c.sigmaMin ?? train[0]!, c.sigmaMax ?? train.at(-1)!, n);
      const logSigmas = npLogF32(train);
      ts = sigmas.map((s) => roundHalfEven(sigmaToT(s, logSigmas)));
      sigmas.push(c.finalSigmasType === 'zero' ? 0 : sigmas.at(-1)!);
    } else {
      sigmas = ts.map((t) => interpIndex(t, train));
      sigmas.push(c.finalSigmasType === 'zero' ? 0 : train[0]!);
    }
    this.ts = ts;
    this.sig = sigmas.map(f32);
    this.reset();
  }

  scaleModelInput(sample: Float32Array, _timestep: number): Float32Array {
    return sample;
  }

  private currentIndex(timestep: number): number {
    if (this.stepIndex === undefined) {
      const hits = this.ts.flatMap((t, i) => (t === timestep ? [i] : []));
      // diffusers starts at the last step for an unknown timestep, and at the second of repeated ones.
      this.stepIndex = hits.length === 0 ? this.ts.length - 1 : hits.length > 1 ? hits[1]! : hits[0]!;
    }
    return this.stepIndex;
  }

  step(modelOutput: Float32Array, timestep: number, sample: Float32Array): StepResult {
    if (this.sig.length === 0) throw new Error('DPM-Solver: call setTimesteps before step');
    if (modelOutput.length !== sample.length) {
      throw new Error(
        `DPM-Solver.step: model output has ${modelOutput.length} values, sample has ${sample.length}`,
      );
    }
    const c = this.config;
    const idx = this.currentIndex(timestep);
    const count = this.ts.length;
    if (idx >= count) throw new Error(`DPM-Solver.step: all ${count} steps are done; call reset()`);
    const short = c.lowerOrderFinal && count < 15;
    const lowerFinal = idx === count - 1 && (c.eulerAtFinal || short || c.finalSigmasType === 'zero');
    const lowerSecond = idx === count - 2 && short;

    const m = this.convertModelOutput(modelOutput, sample, idx);
    this.history.shift();
    this.history.push(m);

    let prev: Float32Array;
    if (c.solverOrder === 1 || this.lowerOrderNums < 1 || lowerFinal) {
      prev = this.firstOrder(m, sample, idx);
    } else if (c.solverOrder === 2 || this.lowerOrderNums < 2 || lowerSecond) {
      prev = this.secondOrder(sample, idx);
    } else {
      prev = this.thirdOrder(sample, idx);
    }
    if (this.lowerOrderNums < c.solverOrder) this.lowerOrderNums++;
    this.stepIndex = idx + 1;
    return { prevSample: prev };
  }

  /** DPM-Solver++ works on the data prediction x0, DPM-Solver on the noise prediction ε. */
  private convertModelOutput(out: Float32Array, sample: Float32Array, idx: number): Float32Array {
    const { alpha: a, sigma: s } = point(this.sig[idx]!);
    const n = out.length;
    const r = new Float32Array(n);
    const pred = this.config.predictionType;
    if (this.config.algorithmType === 'dpmsolver++') {
      if (pred === 'sample') r.set(out);
      else if (pred === 'epsilon') for (let i = 0; i < n; i++) r[i] = f32(sample[i]! - f32(s * out[i]!)) / a;
      else for (let i = 0; i < n; i++) r[i] = f32(a * sample[i]!) - f32(s * out[i]!);
    } else {
      if (pred === 'epsilon') r.set(out);
      else if (pred === 'sample') for (let i = 0; i < n; i++) r[i] = f32(sample[i]! - f32(a * out[i]!)) / s;
      else for (let i = 0; i < n; i++) r[i] = f32(a * out[i]!) + f32(s * sample[i]!);
    }
    return r;
  }

  /** x_t = (σ_t/σ_s) x - α_t (e^{-h} - 1) D0 for ++; the ε form otherwise. */
  private firstOrder(m0: Float32Array, sample: Float32Array, idx: number): Float32Array {
    const t = point(this.sig[idx + 1]!);
    const s0 = point(this.sig[idx]!);
    const h = f32(t.lambda - s0.lambda);
    const [ca, cb] = this.baseCoefficients(t, s0, h);
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) out[i] = f32(ca * sample[i]!) - f32(cb * m0[i]!);
    return out;
  }

  /** (sample coefficient, D0 coefficient); the update subtracts the second times D0. */
  private baseCoefficients(t: Point, s0: Point, h: number): [number, number] {
    if (this.config.algorithmType === 'dpmsolver++') {
      return [f32(t.sigma / s0.sigma), f32(t.alpha * f32(torchExpf(-h) - 1))];
    }
    return [f32(t.alpha / s0.alpha), f32(t.sigma * f32(torchExpf(h) - 1))];
  }

  private secondOrder(sample: Float32Array, idx: number): Float32Array {
    const [m1, m0] = this.history.slice(-2) as [Float32Array, Float32Array];
    const t = point(this.sig[idx + 1]!);
    const s0 = point(this.sig[idx]!);
    const s1 = point(this.sig[idx - 1]!);
    const h = f32(t.lambda - s0.lambda);
    const h0 = f32(s0.lambda - s1.lambda);
    const invR0 = f32(1 / f32(h0 / h));
    const [ca, cb] = this.baseCoefficients(t, s0, h);
    const plus = this.config.algorithmType === 'dpmsolver++';
    // Coefficient c of D1 in x_t = ca·x - cb·D0 + c·D1.
    let cd: number;
    if (this.config.solverType === 'midpoint') cd = -f32(0.5 * cb);
    else if (plus) cd = f32(t.alpha * f32(f32(f32(torchExpf(-h) - 1) / h) + 1));
    else cd = -f32(t.sigma * f32(f32(f32(torchExpf(h) - 1) / h) - 1));
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) {
      const d1 = f32(invR0 * f32(m0[i]! - m1[i]!));
      out[i] = f32(f32(ca * sample[i]!) - f32(cb * m0[i]!)) + f32(cd * d1);
    }
    return out;
  }

  private thirdOrder(sample: Float32Array, idx: number): Float32Array {
    const [m2, m1, m0] = this.history.slice(-3) as [Float32Array, Float32Array, Float32Array];
    const t = point(this.sig[idx + 1]!);
    const s0 = point(this.sig[idx]!);
    const s1 = point(this.sig[idx - 1]!);
    const s2 = point(this.sig[idx - 2]!);
    const h = f32(t.lambda - s0.lambda);
    const r0 = f32(f32(s0.lambda - s1.lambda) / h);
    const r1 = f32(f32(s1.lambda - s2.lambda) / h);
    const inv0 = f32(1 / r0);
    const inv1 = f32(1 / r1);
    const w1 = f32(r0 / f32(r0 + r1));
    const w2 = f32(1 / f32(r0 + r1));
    const [ca, cb] = this.baseCoefficients(t, s0, h);
    const plus = this.config.algorithmType === 'dpmsolver++';
    const e = torchExpf(plus ? -h : h);
    const em1 = f32(e - 1);
    const hh = f32(h * h);
    // x_t = ca·x - cb·D0 + c1·D1 + c2·D2 (signs folded into c1, c2).
    const c1 = plus ? f32(t.alpha * f32(f32(em1 / h) + 1)) : -f32(t.sigma * f32(f32(em1 / h) - 1));
    const c2 = plus
      ? -f32(t.alpha * f32(f32(f32(em1 + h) / hh) - 0.5))
      : -f32(t.sigma * f32(f32(f32(em1 - h) / hh) - 0.5));
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) {
      const d10 = f32(inv0 * f32(m0[i]! - m1[i]!));
      const d11 = f32(inv1 * f32(m1[i]! - m2[i]!));
      const diff = f32(d10 - d11);
      const d1 = f32(d10 + f32(w1 * diff));
      const d2 = f32(w2 * diff);
      out[i] = f32(f32(f32(ca * sample[i]!) - f32(cb * m0[i]!)) + f32(c1 * d1)) + f32(c2 * d2);
    }
    return out;
  }
}
