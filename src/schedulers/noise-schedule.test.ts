// The float32 building blocks: checked against exact (BigInt) arithmetic, float64 math and numpy's rules.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  fmaf,
  interpIndex,
  makeAlphasCumprod,
  makeBetas,
  npArange,
  npLinspace,
  npLogF32,
  roundHalfEven,
  spacedTimesteps,
  torchExpf,
  torchLinspaceF32,
  torchLogf,
} from './noise-schedule.js';
import { Generator } from './random.js';

const f32 = Math.fround;
const view = new DataView(new ArrayBuffer(8));

/** A finite double as an exact rational m · 2^e (BigInt m). */
function exact(x: number): [bigint, bigint] {
  view.setFloat64(0, x);
  const hi = view.getUint32(0);
  const lo = view.getUint32(4);
  const exp = (hi >>> 20) & 0x7ff;
  let m = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo);
  if (exp !== 0) m |= 1n << 52n;
  const e = BigInt(exp === 0 ? -1074 : exp - 1075);
  return [x < 0 ? -m : m, e];
}

/** a·b + c exactly, compared with candidate r: returns sign of (r - exact) scaled, and |r' - exact| test. */
function fmaIsCorrect(a: number, b: number, c: number, r: number): boolean {
  const [ma, ea] = exact(a);
  const [mb, eb] = exact(b);
  const [mc, ec] = exact(c);
  let emin = -1074n;
  for (const e of [ea + eb, ec]) if (e < emin) emin = e;
  const scale = (m: bigint, e: bigint) => m << (e - emin);
  const value = scale(ma * mb, ea + eb) + scale(mc, ec);
  // r is correctly rounded iff |r - value| <= half an ulp of r, with ties to even; check both neighbours.
  const dist = (x: number) => {
    const [m, e] = exact(x);
    const d = scale(m, e) - value;
    return d < 0n ? -d : d;
  };
  view.setFloat32(0, r);
  const bits = view.getUint32(0);
  for (const nb of [bits + 1, bits - 1]) {
    view.setUint32(0, nb >>> 0);
    const other = view.getFloat32(0);
    if (!Number.isFinite(other)) continue;
    const dr = dist(r);
    const dn = dist(other);
    if (dn < dr) return false;
    if (dn === dr && (bits & 1) === 1) return false; // a tie must go to the even one
  }
  return true;
}

test('fmaf rounds a·b + c once, to float32 (checked with exact integer arithmetic)', () => {
  const g = new Generator(77);
  const pick = () => f32((g.uniformDouble() - 0.5) * 2 ** Math.floor(g.uniformDouble() * 20 - 10));
  for (let i = 0; i < 20000; i++) {
    const a = pick();
    const b = pick();
    // c close to -a·b makes cancellation and midpoint cases common.
    const c = i % 2 ? pick() : f32(-a * b + pick() * 2 ** -20);
    const r = fmaf(a, b, c);
    assert.ok(fmaIsCorrect(a, b, c, r), `fmaf(${a}, ${b}, ${c}) = ${r}`);
  }
  // A double-rounding trap: a·b + c = 1 + 3·2^-24 - 2^-70 rounds to the float32 midpoint 1 + 3·2^-24 in
  // double, which would tie to the even 1 + 2^-22; the exact value is below it, so the answer is 1 + 2^-23.
  const [a, b, c] = [1 + 2 ** -23, 2 ** -24 - 2 ** -47, 1 + 2 ** -23];
  assert.equal(f32(a * b + c), 1 + 2 ** -22, 'the naive double path falls into the trap');
  assert.equal(fmaf(a, b, c), 1 + 2 ** -23);
});

test('torch linspace: endpoints exact, monotone, within an ulp of the float64 line', () => {
  const v = torchLinspaceF32(Math.sqrt(0.00085), Math.sqrt(0.012), 1000);
  assert.equal(v[0], f32(Math.sqrt(0.00085)));
  assert.equal(v[999], f32(Math.sqrt(0.012)));
  const a = f32(Math.sqrt(0.00085));
  const step = (f32(Math.sqrt(0.012)) - a) / 999;
  for (let i = 0; i < 1000; i++) {
    if (i > 0) assert.ok(v[i]! > v[i - 1]!);
    const ideal = a + step * i;
    assert.ok(Math.abs(v[i]! - ideal) <= 2 ** -23 * ideal, `index ${i}`);
  }
  assert.deepEqual(Array.from(torchLinspaceF32(2, 5, 1)), [2]);
});

test('alphas_cumprod stays within 1e-6 of a float64 computation (the float32 rounding budget)', () => {
  const ac = makeAlphasCumprod(
    makeBetas({ numTrainTimesteps: 1000, betaStart: 0.00085, betaEnd: 0.012, betaSchedule: 'scaled_linear' }),
  );
  let prod = 1;
  for (let i = 0; i < 1000; i++) {
    const b = Math.sqrt(0.00085) + ((Math.sqrt(0.012) - Math.sqrt(0.00085)) * i) / 999;
    prod *= 1 - b * b;
    assert.ok(Math.abs(ac[i]! - prod) < 1e-6 * prod, `index ${i}`);
  }
  const linear = makeBetas({ numTrainTimesteps: 5, betaStart: 0.1, betaEnd: 0.5, betaSchedule: 'linear' });
  assert.deepEqual(Array.from(linear), [0.1, 0.2, 0.3, 0.4, 0.5].map(f32));
});

test('SLEEF-style log and exp are within one float32 ulp of the true values', () => {
  const g = new Generator(5);
  for (let i = 0; i < 50000; i++) {
    const x = f32(Math.exp((g.uniformDouble() - 0.5) * 80));
    const l = Math.log(x);
    assert.ok(Math.abs(torchLogf(x) - l) <= 2 ** -23 * Math.max(Math.abs(l), 2 ** -10), `log(${x})`);
    const y = f32((g.uniformDouble() - 0.5) * 60);
    const e = Math.exp(y);
    assert.ok(Math.abs(torchExpf(y) - e) <= 2 ** -23 * e, `exp(${y})`);
  }
  assert.equal(torchLogf(1), 0);
  assert.equal(torchExpf(0), 1);
  assert.equal(torchLogf(0), -Infinity);
  assert.equal(torchExpf(-Infinity), 0);
});

test('numpy float32 log is within 4 ulp (its documented bound) of the true value', () => {
  const g = new Generator(6);
  const x = Float32Array.from({ length: 50000 }, () => Math.exp((g.uniformDouble() - 0.5) * 40));
  const l = npLogF32(x);
  for (let i = 0; i < x.length; i++) {
    const t = Math.log(x[i]!);
    assert.ok(Math.abs(l[i]! - t) <= 4 * 2 ** -24 * Math.max(Math.abs(t), 2 ** -126), `log(${x[i]})`);
  }
});

test('numpy rules: round half to even, linspace, float arange length, interp', () => {
  assert.deepEqual([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999].map(roundHalfEven), [0, 2, 2, -0, -2, 2]);
  assert.deepEqual(npLinspace(0, 1, 5), [0, 0.25, 0.5, 0.75, 1]);
  // Values numpy 1.24 / 2.x give for np.round(np.arange(1000, 0, -1000 / n)) - 1.
  const trailing = (n: number) => npArange(1000, 0, -1000 / n).map((t) => roundHalfEven(t) - 1);
  assert.deepEqual(trailing(7), [999, 856, 713, 570, 428, 285, 142]);
  assert.deepEqual(trailing(13).slice(-3), [230, 153, 76]);
  assert.deepEqual(trailing(30).slice(-3), [99, 66, 32]);
  assert.equal(trailing(30).length, 30);
  assert.equal(interpIndex(2.25, [0, 10, 20, 30]), 22.5);
  assert.equal(interpIndex(3, [0, 10, 20, 30]), 30);
  assert.deepEqual(spacedTimesteps('leading', 1000, 3, 1, true), [667, 334, 1]);
  assert.deepEqual(spacedTimesteps('linspace', 1000, 3, 1, false), [999, 499.5, 0]);
});
