// diffusers attention_processor.py `Attention` (the AttnProcessor math) and attention.py's
// BasicTransformerBlock / FeedForward (GEGLU), as SD and SDXL use them.
import type { GraphBuilder, SymTensor } from '../graph/builder.js';
import * as F from '../graph/functional.js';
import { layerNorm, linear } from './layers.js';

export interface AttentionSpec {
  heads: number;
  /** Projection biases on to_q / to_k / to_v (the VAE has them, the UNet does not). */
  qkvBias: boolean;
}

/**
 * An Attention module (at the current module path) over tokens [B, S, C]. With no `context` it is
 * self-attention: K and V pass through the selfAttentionKV hook.
 */
export function attention(
  b: GraphBuilder,
  x: SymTensor,
  context: SymTensor | undefined,
  spec: AttentionSpec,
): SymTensor {
  const c = x.dim(-1);
  const inner = c;
  const q = linear(b, 'to_q', x, inner, spec.qkvBias);
  const source = context ?? x;
  const k = linear(b, 'to_k', source, inner, spec.qkvBias);
  const v = linear(b, 'to_v', source, inner, spec.qkvBias);
  // Self-attention only: DistriFusion swaps in the whole image's K/V.
  const kv = (context ? undefined : b.hooks.selfAttentionKV?.({ path: b.path, k, v })) ?? { k, v };
  const out = F.attention(q, kv.k, kv.v, spec.heads);
  // to_out.1 is dropout
  return b.scope('to_out', () => linear(b, '0', out, c));
}

/** FeedForward with GEGLU: net.0.proj → hidden · gelu(gate), then net.2 (net.1 is dropout). */
export function feedForward(b: GraphBuilder, x: SymTensor, mult = 4): SymTensor {
  return b.scope('ff', () =>
    b.scope('net', () => {
      const dim = x.dim(-1);
      const inner = dim * mult;
      const proj = b.scope('0', () => linear(b, 'proj', x, inner * 2));
      const [hidden, gate] = F.split(proj, [inner, inner], -1) as [SymTensor, SymTensor];
      return linear(b, '2', F.mul(hidden, F.gelu(gate)), dim);
    }),
  );
}

/** BasicTransformerBlock (layer_norm, self-attention, cross-attention, GEGLU feed-forward). */
export function basicTransformerBlock(
  b: GraphBuilder,
  x: SymTensor,
  context: SymTensor,
  heads: number,
): SymTensor {
  const spec = { heads, qkvBias: false };
  const n1 = layerNorm(b, 'norm1', x, 1e-5);
  let h = F.add(
    b.scope('attn1', () => attention(b, n1, undefined, spec)),
    x,
  );
  const n2 = layerNorm(b, 'norm2', h, 1e-5);
  h = F.add(
    b.scope('attn2', () => attention(b, n2, context, spec)),
    h,
  );
  return F.add(feedForward(b, layerNorm(b, 'norm3', h, 1e-5)), h);
}
