import { ShapeError, type SymTensor } from '../builder.js';
import type { DType } from '../dtype.js';

export function fail(op: string, x: SymTensor, message: string): never {
  throw new ShapeError(op, x.graph.path, message);
}

export function fmt(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

export function expectRank(op: string, x: SymTensor, rank: number, what = 'input'): void {
  if (x.rank !== rank) fail(op, x, `${what} must have rank ${rank}, got shape ${fmt(x.shape)}`);
}

export function expectFloat(op: string, x: SymTensor): void {
  if (x.dtype !== 'float32') fail(op, x, `expected float32, got ${x.dtype}`);
}

/** Numpy-style broadcasting; names every shape on a mismatch. */
export function broadcastShapes(op: string, ...ts: SymTensor[]): number[] {
  const n = Math.max(...ts.map((t) => t.rank));
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    let d = 1;
    for (const t of ts) {
      const dt = t.shape[t.rank - n + i] ?? 1;
      if (dt !== 1 && d !== 1 && dt !== d) {
        fail(op, ts[0]!, `shapes ${ts.map((x) => fmt(x.shape)).join(' and ')} do not broadcast`);
      }
      if (dt !== 1) d = dt;
    }
    out.push(d);
  }
  return out;
}

export function normAxis(op: string, x: SymTensor, axis: number): number {
  const a = axis < 0 ? x.rank + axis : axis;
  if (a < 0 || a >= x.rank) fail(op, x, `axis ${axis} out of range for shape ${fmt(x.shape)}`);
  return a;
}

export function unary(op: string, x: SymTensor, dtype: DType = x.dtype): SymTensor {
  return x.graph.node(op, [x], [{ dtype, shape: x.shape }])[0]!;
}
