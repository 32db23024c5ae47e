import type { SymTensor } from '../builder.js';
import { attr } from '../onnx-model.js';
import { fail, fmt } from './common.js';
import { reshape } from './shape.js';

/** torch.nn.functional.linear: x[..., in] · Wᵀ + b, with W [out, in] used as stored (Gemm transB). */
export function linear(x: SymTensor, weight: SymTensor, bias?: SymTensor | null): SymTensor {
  const [out, inF] = weight.shape as [number, number];
  if (weight.rank !== 2) fail('Gemm', x, `weight must be [out, in], got ${fmt(weight.shape)}`);
  if (x.dim(-1) !== inF)
    fail(
      'Gemm',
      x,
      `input ${fmt(x.shape)} has ${x.dim(-1)} features, weight ${fmt(weight.shape)} expects ${inF}`,
    );
  if (bias && (bias.rank !== 1 || bias.dim(0) !== out))
    fail('Gemm', x, `bias ${fmt(bias.shape)} does not match ${out} outputs`);
  const lead = x.shape.slice(0, -1);
  const rows = lead.reduce((a, b) => a * b, 1);
  const x2 = reshape(x, [rows, inF]);
  const inputs = bias ? [x2, weight, bias] : [x2, weight];
  const y = x.graph.node('Gemm', inputs, [{ dtype: 'float32', shape: [rows, out] }], {
    transB: attr.int(1),
  })[0]!;
  return reshape(y, [...lead, out]);
}

/** Batched matrix product with numpy broadcasting of the leading axes. */
export function matmul(a: SymTensor, b: SymTensor): SymTensor {
  if (a.rank < 2 || b.rank < 2) fail('MatMul', a, `needs rank >= 2, got ${fmt(a.shape)} and ${fmt(b.shape)}`);
  if (a.dim(-1) !== b.dim(-2))
    fail('MatMul', a, `inner dimensions differ: ${fmt(a.shape)} @ ${fmt(b.shape)}`);
  const la = a.shape.slice(0, -2);
  const lb = b.shape.slice(0, -2);
  const n = Math.max(la.length, lb.length);
  const lead: number[] = [];
  for (let i = 0; i < n; i++) {
    const da = la[la.length - n + i] ?? 1;
    const db = lb[lb.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1)
      fail('MatMul', a, `batch axes of ${fmt(a.shape)} and ${fmt(b.shape)} do not broadcast`);
    lead.push(Math.max(da, db));
  }
  return a.graph.node('MatMul', [a, b], [{ dtype: 'float32', shape: [...lead, a.dim(-2), b.dim(-1)] }])[0]!;
}
