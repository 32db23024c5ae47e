// Tables and timestep lists shared by the schedulers, computed the way diffusers 0.24 computes them with
// torch 1.13 (float32, CPU) and numpy (float64). Reproducing torch's float32 rounding matters: a float64
// alphas_cumprod differs from torch's by up to 8e-7 relative, and Euler sigmas by up to 2.5e-6.

const f32 = Math.fround;

// ---------------------------------------------------------------- float32 arithmetic as torch does it

const fmaView = new DataView(new ArrayBuffer(4));

/** Adjacent float32 of a float32 value `r`, towards `dir` (+1 or -1). */
function nextFloat(r: number, dir: number): number {
  if (r === 0) return dir > 0 ? 1.401298464324817e-45 : -1.401298464324817e-45;
  fmaView.setFloat32(0, r);
  const b = fmaView.getUint32(0);
  fmaView.setUint32(0, r > 0 === dir > 0 ? b + 1 : b - 1);
  return fmaView.getFloat32(0);
}

/**
 * Fused multiply-add of float32 values (a, b, c must be float32) with a single float32 rounding (C fmaf).
 * The product is exact in double; the sum is rounded once to double, so only a result landing exactly on a
 * float32 midpoint can be double-rounded: the exact rest of the sum then decides.
 */
export function fmaf(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const bv = s - p;
  const err = p - (s - bv) + (c - bv);
  const r = f32(s);
  if (err === 0 || r === s) return r;
  const other = nextFloat(r, s > r ? 1 : -1);
  if ((r + other) / 2 !== s) return r;
  return err > 0 === other > r ? other : r;
}

/**
 * torch.linspace(start, end, steps, dtype=float32) on CPU as torch 1.13 computes it on x86 with AVX2: the
 * two halves are anchored at `start` and `end`, and each block of 8 adds k·step to its first element, with
 * fused multiply-adds.
 */
export function torchLinspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 1) {
    out[0] = f32(start);
    return out;
  }
  const s = f32(start);
  const e = f32(end);
  const step = f32(f32(e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  const at = (i: number) => (i < half ? fmaf(step, i, s) : fmaf(-step, steps - i - 1, e));
  let i = 0;
  // The vectorised loop takes 16 elements per turn as two vectors of 8; the rest is scalar.
  for (; i + 16 <= steps; i += 8) {
    const base = at(i);
    out[i] = base;
    for (let k = 1; k < 8; k++) out[i + k] = fmaf(k, step, base);
  }
  for (; i < steps; i++) out[i] = at(i);
  return out;
}

// torch's CPU log / exp of float32 tensors (even 0-d ones) are SLEEF's 1-ulp AVX2 kernels (Sleef_logf8_u10,
// Sleef_expf8_u10), not libm. DPM-Solver's λ = log α - log σ and e^{-h} need them to match to the bit.

type DoubleFloat = [number, number];
const ldView = new DataView(new ArrayBuffer(4));

function floatBits(x: number): number {
  ldView.setFloat32(0, x);
  return ldView.getInt32(0);
}

function bitsFloat(b: number): number {
  ldView.setInt32(0, b | 0);
  return ldView.getFloat32(0);
}

/** Exact x + y as a double-float (SLEEF dfadd2). */
function dfSum(x: number, y: number): DoubleFloat {
  const s = f32(x + y);
  const v = f32(s - x);
  return [s, f32(f32(x - f32(s - v)) + f32(y - v))];
}

/** SLEEF dfdiv with FMA. */
function dfDiv(n: DoubleFloat, d: DoubleFloat): DoubleFloat {
  const t = f32(1 / d[0]);
  const s = f32(n[0] * t);
  const u = fmaf(t, n[0], -s);
  const v = fmaf(-d[1], t, fmaf(-d[0], t, 1));
  return [s, fmaf(s, v, fmaf(n[1], t, u))];
}

/** log of a positive normal float32, as SLEEF's xlogf_u1 computes it with FMA. */
export function torchLogf(d: number): number {
  if (!(d >= 1.1754943508222875e-38) || d === Infinity) return f32(Math.log(d)); // not needed here
  const e = ((floatBits(f32(d * f32(1 / 0.75))) >>> 23) & 0xff) - 0x7f;
  const m = bitsFloat(floatBits(d) - (e << 23));
  // s = e · ln 2 as a double-float
  const ln2hi = f32(0.6931471824645996);
  const ln2lo = f32(-1.904654323148236e-9);
  let sx = f32(ln2hi * e);
  let sy = fmaf(ln2lo, e, fmaf(ln2hi, e, -sx));
  const x = dfDiv(dfSum(-1, m), dfSum(1, m));
  const x2 = f32(x[0] * x[0]);
  let t = fmaf(f32(0.3027294874), x2, f32(0.3996108174));
  t = fmaf(t, x2, f32(0.666669488));
  // s += 2x (double-float add), then s += x^3 t
  const s1 = f32(sx + f32(x[0] * 2));
  sy = f32(f32(f32(f32(sx - s1) + f32(x[0] * 2)) + sy) + f32(x[1] * 2));
  sx = s1;
  const r = f32(f32(x2 * x[0]) * t);
  const s2 = f32(sx + r);
  sy = f32(f32(f32(sx - s2) + r) + sy);
  return f32(s2 + sy);
}

function roundEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** exp of a float32, as SLEEF's xexpf computes it with FMA. */
export function torchExpf(d: number): number {
  if (d < -104) return 0;
  if (d > 100) return Infinity;
  const q = roundEven(f32(d * f32(Math.LOG2E)));
  let s = fmaf(q, f32(-0.693145751953125), d);
  s = fmaf(q, f32(-0.000001428606765330187), s);
  let u = f32(0.00019852761761285365);
  for (const c of [0.0013930435525253415, 0.008333360776305199, 0.041666485369205475]) {
    u = fmaf(u, s, f32(c));
  }
  u = fmaf(u, s, f32(0.1666666716337204));
  u = fmaf(u, s, 0.5);
  u = f32(1 + fmaf(f32(s * s), u, s));
  const half = q >> 1;
  return f32(f32(u * bitsFloat((half + 0x7f) << 23)) * bitsFloat((q - half + 0x7f) << 23));
}

// ---------------------------------------------------------------- betas and alphas_cumprod

export type BetaSchedule = 'linear' | 'scaled_linear';

export interface NoiseScheduleConfig {
  numTrainTimesteps: number;
  betaStart: number;
  betaEnd: number;
  betaSchedule: BetaSchedule;
  trainedBetas?: readonly number[] | undefined;
}

/** diffusers' `betas` (float32). */
export function makeBetas(c: NoiseScheduleConfig): Float32Array {
  if (c.trainedBetas) return Float32Array.from(c.trainedBetas);
  switch (c.betaSchedule) {
    case 'linear':
      return torchLinspaceF32(c.betaStart, c.betaEnd, c.numTrainTimesteps);
    case 'scaled_linear': {
      const b = torchLinspaceF32(Math.sqrt(c.betaStart), Math.sqrt(c.betaEnd), c.numTrainTimesteps);
      for (let i = 0; i < b.length; i++) b[i] = f32(b[i]! * b[i]!);
      return b;
    }
  }
}

/** cumprod(1 - betas): torch's CPU cumprod of float32 accumulates in double and stores float32. */
export function makeAlphasCumprod(betas: Float32Array): Float32Array {
  const out = new Float32Array(betas.length);
  let acc = 1;
  for (let i = 0; i < betas.length; i++) {
    acc *= f32(1 - betas[i]!);
    out[i] = acc;
  }
  return out;
}

/** ((1 - ᾱ) / ᾱ) ** 0.5 in float32, ascending in t. */
export function sigmasFromAlphasCumprod(ac: Float32Array): Float32Array {
  const out = new Float32Array(ac.length);
  for (let i = 0; i < ac.length; i++) out[i] = Math.sqrt(f32(f32(1 - ac[i]!) / ac[i]!));
  return out;
}

// ---------------------------------------------------------------- numpy helpers (float64)

/** numpy's round: half to even. */
export function roundHalfEven(x: number): number {
  return roundEven(x);
}

/** np.linspace(start, stop, num) in float64 (endpoint included). */
export function npLinspace(start: number, stop: number, num: number): number[] {
  if (num === 1) return [start];
  const step = (stop - start) / (num - 1);
  const out = Array.from({ length: num }, (_, i) => i * step + start);
  out[num - 1] = stop;
  return out;
}

/** np.arange(start, stop, step) for float arguments: length ceil((stop-start)/step), a[i] = start + i·Δ. */
export function npArange(start: number, stop: number, step: number): number[] {
  const len = Math.max(0, Math.ceil((stop - start) / step));
  const delta = start + step - start;
  return Array.from({ length: len }, (_, i) => start + i * delta);
}

/** np.interp(x, arange(table.length), table) for x inside the table. */
export function interpIndex(x: number, table: ArrayLike<number>): number {
  const last = table.length - 1;
  if (x <= 0) return table[0]!;
  if (x >= last) return table[last]!;
  const j = Math.floor(x);
  if (x === j) return table[j]!;
  // numpy: slope · (x - x_j) + y_j, the slope divided by x_{j+1} - x_j = 1.
  return (table[j + 1]! - table[j]!) * (x - j) + table[j]!;
}

/** Karras et al. (2022) sigmas between sigmaMax and sigmaMin, rho 7 (float64, as diffusers does in numpy). */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number): number[] {
  const rho = 7;
  const minInv = sigmaMin ** (1 / rho);
  const maxInv = sigmaMax ** (1 / rho);
  return npLinspace(0, 1, n).map((r) => (maxInv + r * (minInv - maxInv)) ** rho);
}

/**
 * diffusers' `_sigma_to_t`: a fractional timestep whose log sigma interpolates `logSigmas` (ascending). Under
 * numpy 1.x value-based casting, the float64 log sigma meets float32 arrays, so the search and the weight are
 * computed in float32; only the final blend is float64.
 */
export function sigmaToT(sigma: number, logSigmas: Float32Array): number {
  const logSigma = f32(Math.log(Math.max(sigma, 1e-10)));
  // Index of the last entry <= logSigma (0 if none), at most length - 2.
  let low = 0;
  for (let i = 0; i < logSigmas.length; i++) if (logSigma >= logSigmas[i]!) low = i;
  low = Math.min(low, logSigmas.length - 2);
  const lo = logSigmas[low]!;
  const hi = logSigmas[low + 1]!;
  const w = Math.min(1, Math.max(0, f32(f32(lo - logSigma) / f32(lo - hi))));
  return f32(1 - w) * low + w * (low + 1);
}

// numpy >= 1.20 computes float32 log on x86 (AVX2+FMA3 and AVX512F alike) with a rational approximation,
// not libm: up to 3.8 ulp from the true value. Karras timesteps depend on it, so we reproduce it.
const NP_LOG_P = [
  0.025899791179079226, 0.3808837741388408, 1.4800006335765066, 2.112677543073053, 0.9999999999999999, 0,
].map(f32);
const NP_LOG_Q = [
  0.005875095403124574, 0.15464763749839067, 0.9864942958519419, 2.453006071784736, 2.6126775430731093, 1,
].map(f32);
const SQRT1_2F = f32(Math.SQRT1_2);
const LN2F = f32(Math.LN2);

/** np.log of positive normal float32 values, in float32, as numpy's SIMD loop computes it. */
export function npLogF32(x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    fmaView.setFloat32(0, x[i]!);
    const bits = fmaView.getUint32(0);
    if (x[i]! < 1.1754943508222875e-38 || !Number.isFinite(x[i]!)) {
      out[i] = Math.log(x[i]!); // zero, negative, denormal, inf, NaN: not needed by the schedulers
      continue;
    }
    let e = (bits >>> 23) - 126;
    fmaView.setUint32(0, (bits & 0x7fffff) | (126 << 23));
    let m = fmaView.getFloat32(0);
    if (m <= SQRT1_2F) {
      m = f32(m + m);
      e -= 1;
    }
    m = f32(m - 1);
    let num = NP_LOG_P[0]!;
    let den = NP_LOG_Q[0]!;
    for (let k = 1; k < 6; k++) {
      num = fmaf(num, m, NP_LOG_P[k]!);
      den = fmaf(den, m, NP_LOG_Q[k]!);
    }
    out[i] = fmaf(e, LN2F, f32(num / den));
  }
  return out;
}

// ---------------------------------------------------------------- timestep spacing

export type TimestepSpacing = 'leading' | 'trailing' | 'linspace';

/** The step count of a discrete-timestep scheduler (DDIM, PNDM): an integer in [1, numTrain]. */
export function checkInferenceSteps(what: string, numInferenceSteps: number, numTrain: number): void {
  if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1 || numInferenceSteps > numTrain) {
    throw new Error(
      `${what}: numInferenceSteps must be an integer in [1, ${numTrain}], got ${numInferenceSteps}`,
    );
  }
}

/**
 * The integer-valued timesteps of DDIM and Euler (`num_inference_steps` of them, descending). Euler's
 * "linspace" keeps fractional float32 values; DDIM rounds them.
 */
export function spacedTimesteps(
  spacing: TimestepSpacing,
  numTrain: number,
  n: number,
  stepsOffset: number,
  roundLinspace: boolean,
): number[] {
  switch (spacing) {
    case 'linspace': {
      const t = npLinspace(0, numTrain - 1, n).reverse();
      return roundLinspace ? t.map(roundHalfEven) : t.map(f32);
    }
    case 'leading': {
      const ratio = Math.floor(numTrain / n);
      return Array.from({ length: n }, (_, i) => (n - 1 - i) * ratio + stepsOffset);
    }
    case 'trailing':
      return npArange(numTrain, 0, -numTrain / n).map((t) => roundHalfEven(t) - 1);
  }
}
