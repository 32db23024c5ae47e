import type { SymTensor } from '../builder.js';
import { attr } from '../onnx-model.js';
import { expectRank, fail, fmt, normAxis } from './common.js';

/** Reshape with at most one -1 and 0 = keep that axis (ONNX semantics). */
export function reshape(x: SymTensor, shape: readonly number[]): SymTensor {
  const total = x.shape.reduce((a, b) => a * b, 1);
  const resolved = shape.map((d, i) => (d === 0 ? x.dim(i) : d));
  const known = resolved.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
  const minus = resolved.filter((d) => d === -1).length;
  if (minus > 1) fail('Reshape', x, `more than one -1 in ${fmt(shape)}`);
  if (minus === 1) {
    if (known === 0 || total % known !== 0)
      fail('Reshape', x, `cannot reshape ${fmt(x.shape)} to ${fmt(shape)}`);
    resolved[resolved.indexOf(-1)] = total / known;
  } else if (known !== total) {
    fail('Reshape', x, `cannot reshape ${fmt(x.shape)} (${total} values) to ${fmt(shape)}`);
  }
  if (resolved.length === x.rank && resolved.every((d, i) => d === x.shape[i])) return x;
  const g = x.graph;
  return g.node('Reshape', [x, g.constInt64(resolved)], [{ dtype: x.dtype, shape: resolved }])[0]!;
}

export function transpose(x: SymTensor, perm: readonly number[]): SymTensor {
  if (perm.length !== x.rank || [...perm].sort().some((p, i) => p !== i)) {
    fail('Transpose', x, `perm ${fmt(perm)} is not a permutation of the axes of ${fmt(x.shape)}`);
  }
  const shape = perm.map((p) => x.dim(p));
  return x.graph.node('Transpose', [x], [{ dtype: x.dtype, shape }], { perm: attr.ints(perm) })[0]!;
}

export function concat(xs: readonly SymTensor[], axis: number): SymTensor {
  const first = xs[0];
  if (!first) throw new Error('Concat: no inputs');
  if (xs.length === 1) return first;
  const a = normAxis('Concat', first, axis);
  let total = 0;
  for (const x of xs) {
    if (
      x.rank !== first.rank ||
      x.dtype !== first.dtype ||
      x.shape.some((d, i) => i !== a && d !== first.dim(i))
    ) {
      fail('Concat', first, `cannot concatenate ${fmt(first.shape)} and ${fmt(x.shape)} along axis ${a}`);
    }
    total += x.dim(a);
  }
  const shape = first.shape.map((d, i) => (i === a ? total : d));
  return first.graph.node('Concat', xs, [{ dtype: first.dtype, shape }], { axis: attr.int(a) })[0]!;
}

export function split(x: SymTensor, sizes: readonly number[], axis: number): SymTensor[] {
  const a = normAxis('Split', x, axis);
  const sum = sizes.reduce((p, c) => p + c, 0);
  if (sum !== x.dim(a)) fail('Split', x, `sizes ${fmt(sizes)} do not add up to axis ${a} of ${fmt(x.shape)}`);
  const g = x.graph;
  const outs = sizes.map((s) => ({ dtype: x.dtype, shape: x.shape.map((d, i) => (i === a ? s : d)) }));
  return g.node('Split', [x, g.constInt64(sizes)], outs, { axis: attr.int(a) });
}

/** x[..., start:end, ...] along one axis (end exclusive, clamped like Python). */
export function slice(x: SymTensor, axis: number, start: number, end: number): SymTensor {
  const a = normAxis('Slice', x, axis);
  const n = x.dim(a);
  const s = Math.max(0, Math.min(n, start < 0 ? n + start : start));
  const e = Math.max(s, Math.min(n, end < 0 ? n + end : end));
  if (s === 0 && e === n) return x;
  if (e === s) fail('Slice', x, `empty slice [${start}, ${end}) of axis ${a} in ${fmt(x.shape)}`);
  const g = x.graph;
  const shape = x.shape.map((d, i) => (i === a ? e - s : d));
  return g.node(
    'Slice',
    [x, g.constInt64([s]), g.constInt64([e]), g.constInt64([a])],
    [{ dtype: x.dtype, shape }],
  )[0]!;
}

/** Zero padding of a 4-D tensor's spatial axes, ONNX order [top, left, bottom, right]. */
export function pad2d(x: SymTensor, pads: readonly [number, number, number, number]): SymTensor {
  expectRank('Pad', x, 4);
  if (pads.every((p) => p === 0)) return x;
  const [t, l, b, r] = pads;
  const g = x.graph;
  const shape = [x.dim(0), x.dim(1), x.dim(2) + t + b, x.dim(3) + l + r];
  return g.node('Pad', [x, g.constInt64([0, 0, t, l, 0, 0, b, r])], [{ dtype: x.dtype, shape }], {
    mode: attr.string('constant'),
  })[0]!;
}

export function unsqueeze(x: SymTensor, axis: number): SymTensor {
  const a = axis < 0 ? x.rank + 1 + axis : axis;
  const shape = [...x.shape.slice(0, a), 1, ...x.shape.slice(a)];
  return reshape(x, shape);
}

/** Rows of a table by integer ids: Gather(table, ids) along axis 0. */
export function gather(table: SymTensor, ids: SymTensor, axis = 0): SymTensor {
  if (ids.dtype !== 'int64' && ids.dtype !== 'int32')
    fail('Gather', ids, `indices must be integers, got ${ids.dtype}`);
  const a = normAxis('Gather', table, axis);
  const shape = [...table.shape.slice(0, a), ...ids.shape, ...table.shape.slice(a + 1)];
  return table.graph.node('Gather', [table, ids], [{ dtype: table.dtype, shape }], { axis: attr.int(a) })[0]!;
}

/** Nearest-neighbour 2x upsampling of H and W, then an optional crop to `size` (torch's interpolate). */
export function upsampleNearest2x(x: SymTensor, size?: readonly [number, number]): SymTensor {
  expectRank('Resize', x, 4);
  const g = x.graph;
  const up = [x.dim(0), x.dim(1), x.dim(2) * 2, x.dim(3) * 2];
  let y = g.node('Resize', [x, null, g.constFloat([1, 1, 2, 2])], [{ dtype: x.dtype, shape: up }], {
    mode: attr.string('nearest'),
    coordinate_transformation_mode: attr.string('asymmetric'),
    nearest_mode: attr.string('floor'),
  })[0]!;
  if (size) {
    const [h, w] = size;
    // nearest from n to 2n-1 rows equals 2x then crop (floor(i·n/(2n-1)) = floor(i/2) for i < 2n-1)
    if (h > up[2]! || w > up[3]! || h < up[2]! - 1 || w < up[3]! - 1) {
      fail('Resize', x, `cannot upsample ${fmt(x.shape)} to size [${h}, ${w}] with a 2x nearest resize`);
    }
    y = slice(slice(y, 2, 0, h), 3, 0, w);
  }
  return y;
}

export function reduceMean(x: SymTensor, axes: readonly number[], keepdims = true): SymTensor {
  const ax = axes.map((a) => normAxis('ReduceMean', x, a));
  const shape = keepdims
    ? x.shape.map((d, i) => (ax.includes(i) ? 1 : d))
    : x.shape.filter((_, i) => !ax.includes(i));
  return x.graph.node('ReduceMean', [x], [{ dtype: x.dtype, shape }], {
    axes: attr.ints(ax),
    keepdims: attr.int(keepdims ? 1 : 0),
  })[0]!;
}
