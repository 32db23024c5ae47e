import type { SymTensor } from '../builder.js';
import { attr } from '../onnx-model.js';
import { softmax } from './activation.js';
import { expectRank, fail, fmt } from './common.js';
import { add, mul } from './elementwise.js';
import { matmul } from './linear.js';
import { reshape, transpose } from './shape.js';

export type AttentionImpl = 'matmul' | 'mha';

export interface AttentionOptions {
  /** Additive bias broadcast to [B, heads, Sq, Sk] (a causal mask). */
  bias?: SymTensor;
  /**
   * 'mha' (default without a bias) uses ORT's com.microsoft.MultiHeadAttention, whose CPU kernel is a
   * flash attention: measured 1.1-1.2x faster than 'matmul' (plain MatMul/Softmax/MatMul) at SDXL sizes.
   */
  impl?: AttentionImpl;
}

/**
 * Multi-head scaled dot-product attention on [B, S, heads·d] projections:
 * softmax(q·kᵀ / sqrt(d)) · v, heads split from and merged back into the last axis.
 */
export function attention(
  q: SymTensor,
  k: SymTensor,
  v: SymTensor,
  heads: number,
  opts: AttentionOptions = {},
): SymTensor {
  expectRank('Attention', q, 3, 'query');
  expectRank('Attention', k, 3, 'key');
  expectRank('Attention', v, 3, 'value');
  const [b, sq, dim] = q.shape as [number, number, number];
  const sk = k.dim(1);
  if (k.dim(0) !== b || v.dim(0) !== b || k.dim(2) !== dim || v.dim(1) !== sk) {
    fail('Attention', q, `query ${fmt(q.shape)}, key ${fmt(k.shape)} and value ${fmt(v.shape)} do not match`);
  }
  if (dim % heads !== 0) fail('Attention', q, `${dim} channels do not split into ${heads} heads`);
  const d = dim / heads;
  const dv = v.dim(2) / heads;
  const scale = 1 / Math.sqrt(d);
  if ((opts.impl ?? 'mha') === 'mha' && !opts.bias) {
    return q.graph.node(
      'MultiHeadAttention',
      [q, k, v],
      [{ dtype: 'float32', shape: [b, sq, heads * dv] }],
      {
        num_heads: attr.int(heads),
        scale: attr.float(scale),
      },
      'com.microsoft',
    )[0]!;
  }
  const qh = transpose(reshape(q, [b, sq, heads, d]), [0, 2, 1, 3]);
  const kt = transpose(reshape(k, [b, sk, heads, d]), [0, 2, 3, 1]);
  const vh = transpose(reshape(v, [b, sk, heads, dv]), [0, 2, 1, 3]);
  let scores = mul(matmul(qh, kt), scale);
  if (opts.bias) scores = add(scores, opts.bias);
  const out = matmul(softmax(scores, -1), vh);
  return reshape(transpose(out, [0, 2, 1, 3]), [b, sq, heads * dv]);
}
