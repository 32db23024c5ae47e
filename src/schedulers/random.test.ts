// The generator against tensors torch.randn made (bit-exact), plus the properties torch's fill rules imply.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { asFloat, loadFixture, skipWithoutFixtures } from '../../test/helpers/fixtures.js';
import { Generator, randn } from './random.js';

/** Number of positions where a and b differ (bitwise). */
function mismatches(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let n = 0;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) n++;
  return n;
}

const FIXTURES: [string[], string, number][] = [
  [['schedulers', 'ddim_4.safetensors'], 'latent0', 5001], // [1,4,4,5]: 80 values
  [['pipeline-sdxl-tiny', 'io_a.safetensors'], 'latents_in', 6001], // [1,4,16,24]
  [['pipeline-sd15-tiny', 'io_b.safetensors'], 'latents_in', 6001], // [1,4,8,12]
  [['distrifuser', 'distrifuser_shared.safetensors'], 'inputs.latents', 7001], // [1,4,32,24]
];

for (const [path, name, seed] of FIXTURES) {
  test(`torch.randn(seed ${seed}) = ${path.join('/')} ${name}, bit for bit`, {
    skip: skipWithoutFixtures,
  }, async () => {
    const ref = asFloat((await loadFixture(...path))[name], name);
    assert.equal(mismatches(randn(ref.shape, new Generator(seed)), ref.data), 0);
  });
}

test('the 50 scheduler model outputs (seeds 5100..5149, 80 values each) bit for bit', {
  skip: skipWithoutFixtures,
}, async () => {
  const mo = asFloat((await loadFixture('schedulers', 'ddim_50.safetensors')).model_outputs).data;
  for (let i = 0; i < 50; i++) {
    const ours = new Generator(5100 + i).randn(80);
    assert.equal(mismatches(ours, mo.subarray(i * 80, (i + 1) * 80)), 0, `seed ${5100 + i}`);
  }
});

test('mt19937 seeded like torch: the first outputs for seed 5489 are the reference mt19937 ones', () => {
  // Matsumoto & Nishimura's reference output for init_genrand(5489) (also std::mt19937's default).
  const g = new Generator(5489);
  assert.deepEqual([g.nextUint32(), g.nextUint32(), g.nextUint32()], [3499211612, 581869302, 3890346734]);
  const h = new Generator(5489);
  for (let i = 0; i < 9999; i++) h.nextUint32();
  assert.equal(h.nextUint32(), 4123659995, '10000th output (the C++ standard requirement)');
});

test('seeds: the low 32 bits count, negatives wrap like torch, state resets', () => {
  assert.deepEqual(new Generator(2n ** 32n + 7n).randn(20), new Generator(7).randn(20));
  // torch: seed < 0 → 0xffff_ffff_ffff_ffff + seed
  assert.deepEqual(new Generator(-1).randn(20), new Generator(0xffff_ffff_ffff_fffen).randn(20));
  assert.equal(new Generator(-5).initialSeed(), 0xffff_ffff_ffff_fffan);
  assert.throws(() => new Generator(2n ** 64n), /outside/);
  assert.throws(() => new Generator(1.5), /integer/);
  const g = new Generator(3);
  const a = g.randn(40);
  g.randn(3); // also leaves a cached normal behind
  assert.deepEqual(g.manualSeed(3).randn(40), a);
});

test('clone continues the same stream independently', () => {
  const g = new Generator(10);
  g.randn(100);
  const c = g.clone();
  assert.deepEqual(c.randn(50), g.randn(50));
});

test('a tail that is not a multiple of 16 redraws the last 16 slots; the head is unchanged', () => {
  // randn(20): u[0..20) drawn, block 0..16 transformed, then 16 fresh uniforms into 4..20.
  const full = new Generator(1).randn(20);
  const head = new Generator(1).randn(16);
  assert.deepEqual(full.subarray(0, 4), head.subarray(0, 4));
  assert.notDeepEqual(full.subarray(4, 8), head.subarray(4, 8));
  // randn(32) is two plain blocks, and its first block equals randn(16).
  assert.deepEqual(new Generator(1).randn(32).subarray(0, 16), head);
});

test('small tensors use double Box-Muller pairs, the second value cached across calls', () => {
  const pair = new Generator(4).randn(2);
  const g = new Generator(4);
  const one = g.randn(1);
  const two = g.randn(1);
  assert.deepEqual([one[0], two[0]], [pair[0], pair[1]]);
  // Manual check of the first pair: 53-bit uniforms from two draws each.
  const m = new Generator(4);
  const u1 = m.uniformDouble();
  const u2 = m.uniformDouble();
  const r = Math.sqrt(-2 * Math.log(1 - u2));
  assert.equal(pair[0], Math.fround(r * Math.cos(2 * Math.PI * u1)));
  assert.equal(pair[1], Math.fround(r * Math.sin(2 * Math.PI * u1)));
});

test('the normals look standard: mean ~0, variance ~1, symmetric tails', () => {
  const x = new Generator(123).randn(200_000);
  let sum = 0;
  let sq = 0;
  let beyond2 = 0;
  for (const v of x) {
    sum += v;
    sq += v * v;
    if (Math.abs(v) > 2) beyond2++;
  }
  const mean = sum / x.length;
  const variance = sq / x.length - mean * mean;
  assert.ok(Math.abs(mean) < 0.01, `mean ${mean}`);
  assert.ok(Math.abs(variance - 1) < 0.01, `variance ${variance}`);
  assert.ok(Math.abs(beyond2 / x.length - 0.0455) < 0.002, `P(|x| > 2) = ${beyond2 / x.length}`);
});

test('randn checks its shape', () => {
  assert.equal(randn([2, 3, 4], new Generator(0)).length, 24);
  assert.equal(randn([0, 4], new Generator(0)).length, 0);
  assert.throws(() => randn([2, -1], new Generator(0)), /bad shape/);
});
