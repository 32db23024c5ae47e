// A seeded normal generator that reproduces torch's CPU generator bit for bit, so that a seed gives the
// same latents here as `torch.randn(shape, generator=torch.Generator().manual_seed(seed))` gives diffusers.
//
// What torch 1.13 does (aten: CPUGeneratorImpl, MT19937RNGEngine.h, TransformationHelper.h,
// DistributionsHelper.h, cpu/DistributionTemplates.h, cpu/avx_mathfun.h):
// - the engine is a standard mt19937 seeded with the low 32 bits of the seed;
// - a float32 tensor of >= 16 elements is first filled with uniforms `(u32 & 0xffffff) / 2^24`, then every
//   block of 16 becomes 16 normals by Box-Muller (data[j] = r cos θ, data[j+8] = r sin θ, u1 = 1 - data[j],
//   θ = 2π data[j+8]); a tail that is not a multiple of 16 draws 16 fresh uniforms into the LAST 16 slots
//   and transforms them again (overwriting values already produced);
// - on x86 CPUs with AVX2 that transform is `normal_fill_16_AVX2`: Cephes-style float32 log and sincos from
//   avx_mathfun.h, compiled with FMA contraction. We emulate it with float32 rounding (Math.fround) and an
//   exact float32 fused multiply-add at the places GCC contracts;
// - smaller tensors take one double Box-Muller pair per two elements (53-bit uniforms from two draws), with
//   the second value of a pair cached in the generator for the next element, even across calls.
// The >= 16 path is checked bit-exactly against 9,072 values torch made (random.test.ts); those tensors are all
// multiples of 16, so the tail rule follows the source without a fixture. A torch build or CPU that takes the
// portable kernel instead (libm logf/cosf/sinf, e.g. without AVX2) gives values that differ in the last bits.
// The < 16 path follows the source but has no fixture, and uses JavaScript's double log/sin/cos, which may
// differ from glibc by an ulp before the cast to float32.
import { fmaf } from './noise-schedule.js';

const N = 624;
const f32 = Math.fround;

/** Same state and sequence as torch.Generator() on CPU after manual_seed(seed). */
export class Generator {
  private readonly state = new Uint32Array(N);
  private next = N;
  private cachedNormal: number | undefined;
  private seedValue = 0n;

  constructor(seed: number | bigint) {
    this.manualSeed(seed);
  }

  /** torch.Generator.manual_seed: negative seeds wrap like torch (0xffff_ffff_ffff_ffff + seed). */
  manualSeed(seed: number | bigint): this {
    let s = typeof seed === 'bigint' ? seed : BigInt(checkedSeed(seed));
    if (s < -(1n << 63n) || s > (1n << 64n) - 1n) {
      throw new Error(`Generator seed ${s} is outside [-2^63, 2^64 - 1] (the range torch accepts)`);
    }
    if (s < 0n) s += 0xffff_ffff_ffff_ffffn;
    this.seedValue = s;
    const st = this.state;
    st[0] = Number(s & 0xffff_ffffn);
    for (let j = 1; j < N; j++) {
      const p = st[j - 1]! ^ (st[j - 1]! >>> 30);
      st[j] = (Math.imul(1812433253, p) + j) >>> 0;
    }
    this.next = N;
    this.cachedNormal = undefined;
    return this;
  }

  initialSeed(): bigint {
    return this.seedValue;
  }

  /** An independent copy with the same state (like torch's get_state / set_state). */
  clone(): Generator {
    const g = new Generator(0);
    g.state.set(this.state);
    g.next = this.next;
    g.cachedNormal = this.cachedNormal;
    g.seedValue = this.seedValue;
    return g;
  }

  /** The next 32-bit output of mt19937. */
  nextUint32(): number {
    if (this.next >= N) this.twist();
    let y = this.state[this.next++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** Uniform in [0, 1) with 24 random bits: torch's uniform_real_distribution<float>(0, 1). */
  uniformFloat(): number {
    return (this.nextUint32() & 0xffffff) / 16777216;
  }

  /** Uniform in [0, 1) with 53 random bits from two draws: torch's uniform_real_distribution<double>. */
  uniformDouble(): number {
    const hi = this.nextUint32();
    const lo = this.nextUint32();
    return ((hi & 0x1fffff) * 4294967296 + lo) / 9007199254740992;
  }

  /** n standard normals in the order torch.randn fills a contiguous float32 tensor of n elements. */
  randn(n: number): Float32Array {
    if (!Number.isInteger(n) || n < 0)
      throw new Error(`randn: element count must be a non-negative integer, got ${n}`);
    const out = new Float32Array(n);
    if (n >= 16) {
      for (let i = 0; i < n; i++) out[i] = this.uniformFloat();
      for (let i = 0; i + 16 <= n; i += 16) normalFill16(out, i);
      if (n % 16 !== 0) {
        const o = n - 16;
        for (let i = 0; i < 16; i++) out[o + i] = this.uniformFloat();
        normalFill16(out, o);
      }
    } else {
      for (let i = 0; i < n; i++) out[i] = f32(this.normalDouble());
    }
    return out;
  }

  /** torch's normal_distribution<double>(0, 1), with its one-value cache. */
  private normalDouble(): number {
    if (this.cachedNormal !== undefined) {
      const v = this.cachedNormal;
      this.cachedNormal = undefined;
      return v;
    }
    const u1 = this.uniformDouble();
    const u2 = this.uniformDouble();
    const r = Math.sqrt(-2 * Math.log(1 - u2));
    const theta = 2 * Math.PI * u1;
    this.cachedNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  private twist(): void {
    const st = this.state;
    for (let k = 0; k < N; k++) {
      const y = (st[k]! & 0x80000000) | (st[(k + 1) % N]! & 0x7fffffff);
      st[k] = st[(k + 397) % N]! ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
    }
    this.next = 0;
  }
}

function checkedSeed(seed: number): number {
  if (!Number.isSafeInteger(seed)) throw new Error(`Generator seed must be an integer, got ${seed}`);
  return seed;
}

/** torch.randn(shape, generator=g) for a float32 CPU tensor, flattened. */
export function randn(shape: readonly number[], generator: Generator): Float32Array {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`randn: bad shape [${shape.join(', ')}]`);
    n *= d;
  }
  return generator.randn(n);
}

const TWO_PI = f32(2 * Math.PI);

/** normal_fill_16_AVX2: 16 uniforms at data[o..o+16) become 16 normals. */
function normalFill16(data: Float32Array, o: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = f32(1 - data[o + j]!);
    const u2 = data[o + j + 8]!;
    const radius = f32(Math.sqrt(f32(-2 * log256(u1))));
    sincos256(f32(TWO_PI * u2));
    data[o + j] = f32(radius * sc.cos);
    data[o + j + 8] = f32(radius * sc.sin);
  }
}

// avx_mathfun.h constants, rounded to float32 as the C initialisers are.
const LOG_P = [
  0.070376836292, -0.1151461031, 0.1167699874, -0.12420140846, 0.14249322787, -0.16668057665, 0.20000714765,
  -0.24999993993, 0.33333331174,
].map(f32);
const LOG_Q1 = f32(-2.1219444e-4);
const LOG_Q2 = f32(0.693359375);
const SQRTHF = f32(Math.SQRT1_2);
const bitsView = new DataView(new ArrayBuffer(4));

/** log256_ps for one positive normal float32 (u1 is in (0, 1]). */
function log256(v: number): number {
  bitsView.setFloat32(0, v);
  const bits = bitsView.getUint32(0);
  bitsView.setUint32(0, (bits & ~0x7f800000) | 0x3f000000); // mantissa with exponent of 0.5
  let x = bitsView.getFloat32(0);
  let e = f32((bits >>> 23) - 0x7f + 1);
  const small = x < SQRTHF;
  const tmp = small ? x : 0;
  x = f32(x - 1);
  if (small) e = f32(e - 1);
  x = f32(x + tmp);
  const z = f32(x * x);
  let y = LOG_P[0]!;
  for (let i = 1; i < LOG_P.length; i++) y = fmaf(y, x, LOG_P[i]!);
  y = f32(y * x);
  // GCC fuses y*z with the following add (the first multiply in source order wins).
  y = fmaf(y, z, f32(e * LOG_Q1));
  y = f32(y - f32(z * 0.5));
  x = f32(x + y);
  return fmaf(e, LOG_Q2, x);
}

const FOPI = f32(1.27323954473516);
const DP1 = f32(-0.78515625);
const DP2 = f32(-0.00024187564849853516);
const DP3 = f32(-3.774894977445941e-8);
const COS_P = [2.443315711809948e-5, -1.388731625493765e-3, 0.04166664568298827].map(f32);
const SIN_P = [-1.9515295891e-4, 8.3321608736e-3, -0.16666654611].map(f32);
const sc = { sin: 0, cos: 0 };

/** sincos256_ps for one float32 (θ in [0, 2π)); writes into `sc`. */
function sincos256(theta: number): void {
  let x = Math.abs(theta);
  let j = Math.trunc(f32(x * FOPI));
  j = (j + 1) & ~1;
  const y = j;
  // Extended precision reduction x - y·π/4 in three parts.
  x = fmaf(y, DP1, x);
  x = fmaf(y, DP2, x);
  x = fmaf(y, DP3, x);
  const signSin = theta < 0 !== ((j & 4) !== 0);
  const signCos = (~(j - 2) & 4) !== 0;
  const cosFirst = (j & 2) === 0;
  const z = f32(x * x);
  let yc = fmaf(COS_P[0]!, z, COS_P[1]!);
  yc = fmaf(yc, z, COS_P[2]!);
  yc = f32(yc * z);
  yc = fmaf(yc, z, -f32(z * 0.5));
  yc = f32(yc + 1);
  let ys = fmaf(SIN_P[0]!, z, SIN_P[1]!);
  ys = fmaf(ys, z, SIN_P[2]!);
  ys = f32(ys * z);
  ys = fmaf(ys, x, x);
  const s = cosFirst ? ys : yc;
  const c = cosFirst ? yc : ys;
  sc.sin = signSin ? -s : s;
  sc.cos = signCos ? -c : c;
}
