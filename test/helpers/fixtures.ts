// Shared by the golden tests: where the reference fixtures live, and how close is close enough.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type AnyTensor, readSafetensors, type Tensor } from '../../src/index.js';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** ../shared/fixtures beside the checkout, or DISTRIFUSION_FIXTURES. */
export const fixturesDir = process.env.DISTRIFUSION_FIXTURES ?? resolve(repoRoot, '../shared/fixtures');

export const haveFixtures = existsSync(join(fixturesDir, 'README.md'));

export const NO_FIXTURES = `reference fixtures not found at ${fixturesDir} (set DISTRIFUSION_FIXTURES)`;

/** Use as `{ skip: skipWithoutFixtures }` in test options. */
export const skipWithoutFixtures: string | false = haveFixtures ? false : NO_FIXTURES;

export function fixture(...parts: string[]): string {
  return join(fixturesDir, ...parts);
}

export async function loadFixture(...parts: string[]): Promise<Record<string, AnyTensor>> {
  return readSafetensors(fixture(...parts));
}

export function asFloat(t: AnyTensor | undefined, name = 'tensor'): Tensor {
  if (!t) throw new Error(`fixture tensor ${name} missing`);
  if (t.data instanceof Float32Array) return t as Tensor;
  return { data: Float32Array.from(t.data, (v) => Number(v)), shape: t.shape };
}

export interface Closeness {
  relL2: number;
  maxAbs: number;
  maxAbsOverMaxRef: number;
}

/** Relative L2 and max-abs errors of `actual` against `ref`, in float64. */
export function compare(actual: ArrayLike<number>, ref: ArrayLike<number>): Closeness {
  if (actual.length !== ref.length) throw new Error(`length ${actual.length} vs reference ${ref.length}`);
  let num = 0;
  let den = 0;
  let maxAbs = 0;
  let maxRef = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = actual[i]! - ref[i]!;
    num += d * d;
    den += ref[i]! * ref[i]!;
    if (!(Math.abs(d) <= maxAbs)) maxAbs = Number.isNaN(d) ? Number.POSITIVE_INFINITY : Math.abs(d);
    maxRef = Math.max(maxRef, Math.abs(ref[i]!));
  }
  return {
    relL2: den === 0 ? Math.sqrt(num) : Math.sqrt(num / den),
    maxAbs,
    maxAbsOverMaxRef: maxRef === 0 ? maxAbs : maxAbs / maxRef,
  };
}

/** Asserts shape equality and closeness; the message carries the measured figures. */
export function assertClose(
  t: TestContext | undefined,
  what: string,
  actual: Tensor,
  ref: Tensor,
  tol: { relL2: number; maxAbsOverMaxRef?: number },
): Closeness {
  if (actual.shape.join(',') !== ref.shape.join(',')) {
    throw new Error(`${what}: shape [${actual.shape}] differs from the reference [${ref.shape}]`);
  }
  const c = compare(actual.data, ref.data);
  const msg = `${what}: rel L2 ${c.relL2.toExponential(2)}, max abs ${c.maxAbs.toExponential(2)} (${c.maxAbsOverMaxRef.toExponential(2)} of max ref)`;
  t?.diagnostic(msg);
  if (
    !(c.relL2 < tol.relL2) ||
    (tol.maxAbsOverMaxRef !== undefined && !(c.maxAbsOverMaxRef < tol.maxAbsOverMaxRef))
  ) {
    throw new Error(
      `${msg}; tolerance rel L2 < ${tol.relL2}${tol.maxAbsOverMaxRef ? `, max abs ratio < ${tol.maxAbsOverMaxRef}` : ''}`,
    );
  }
  return c;
}
