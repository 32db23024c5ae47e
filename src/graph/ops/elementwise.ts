import type { SymTensor } from '../builder.js';
import { attr } from '../onnx-model.js';
import { broadcastShapes, fail, unary } from './common.js';

function binary(op: string, a: SymTensor, b: SymTensor): SymTensor {
  if (a.dtype !== b.dtype) fail(op, a, `dtypes differ: ${a.dtype} and ${b.dtype}`);
  const shape = broadcastShapes(op, a, b);
  return a.graph.node(op, [a, b], [{ dtype: a.dtype, shape }])[0]!;
}

function scalarOf(a: SymTensor, b: SymTensor | number): SymTensor {
  return typeof b === 'number' ? a.graph.constFloat([b], []) : b;
}

export const add = (a: SymTensor, b: SymTensor | number): SymTensor => binary('Add', a, scalarOf(a, b));
export const sub = (a: SymTensor, b: SymTensor | number): SymTensor => binary('Sub', a, scalarOf(a, b));
export const mul = (a: SymTensor, b: SymTensor | number): SymTensor => binary('Mul', a, scalarOf(a, b));
export const div = (a: SymTensor, b: SymTensor | number): SymTensor => binary('Div', a, scalarOf(a, b));
export const max = (a: SymTensor, b: SymTensor | number): SymTensor => binary('Max', a, scalarOf(a, b));
export const less = (a: SymTensor, b: SymTensor | number): SymTensor => {
  const bb = scalarOf(a, b);
  const shape = broadcastShapes('Less', a, bb);
  return a.graph.node('Less', [a, bb], [{ dtype: 'bool', shape }])[0]!;
};

export const sigmoid = (x: SymTensor): SymTensor => unary('Sigmoid', x);
export const tanh = (x: SymTensor): SymTensor => unary('Tanh', x);
export const erf = (x: SymTensor): SymTensor => unary('Erf', x);
export const sqrt = (x: SymTensor): SymTensor => unary('Sqrt', x);
export const exp = (x: SymTensor): SymTensor => unary('Exp', x);
export const sin = (x: SymTensor): SymTensor => unary('Sin', x);
export const cos = (x: SymTensor): SymTensor => unary('Cos', x);
export const reciprocal = (x: SymTensor): SymTensor => unary('Reciprocal', x);

export function where(cond: SymTensor, a: SymTensor, b: SymTensor): SymTensor {
  const shape = broadcastShapes('Where', cond, a, b);
  return a.graph.node('Where', [cond, a, b], [{ dtype: a.dtype, shape }])[0]!;
}

export function cast(x: SymTensor, to: 'float32' | 'int64'): SymTensor {
  if (x.dtype === to) return x;
  return x.graph.node('Cast', [x], [{ dtype: to, shape: x.shape }], {
    to: attr.int(to === 'float32' ? 1 : 7),
  })[0]!;
}

export function clip(x: SymTensor, lo: number, hi: number): SymTensor {
  const g = x.graph;
  return g.node(
    'Clip',
    [x, g.constFloat([lo], []), g.constFloat([hi], [])],
    [{ dtype: x.dtype, shape: x.shape }],
  )[0]!;
}
