// diffusers transformer_2d.py: Transformer2DModel for continuous (image) inputs.
import type { GraphBuilder, SymTensor } from '../graph/builder.js';
import * as F from '../graph/functional.js';
import { basicTransformerBlock } from './attention.js';
import { conv2d, fromTokens, groupNorm, linear, toTokens } from './layers.js';

export interface Transformer2DSpec {
  heads: number;
  layers: number;
  groups: number;
  /** SD 2.x / SDXL project with a Linear; SD 1.x with a 1x1 conv. */
  linearProjection: boolean;
}

export function transformer2d(
  b: GraphBuilder,
  x: SymTensor,
  context: SymTensor,
  s: Transformer2DSpec,
): SymTensor {
  const [, c, h, w] = x.shape as [number, number, number, number];
  // Transformer2DModel's GroupNorm always uses eps 1e-6.
  const normed = groupNorm(b, 'norm', x, s.groups, 1e-6);
  let tokens = s.linearProjection
    ? linear(b, 'proj_in', toTokens(normed), c)
    : toTokens(conv2d(b, 'proj_in', normed, { inChannels: c, outChannels: c, kernel: 1 }));
  b.scope('transformer_blocks', () => {
    for (let i = 0; i < s.layers; i++)
      tokens = b.scope(i, () => basicTransformerBlock(b, tokens, context, s.heads));
  });
  const out = s.linearProjection
    ? fromTokens(linear(b, 'proj_out', tokens, c), h, w)
    : conv2d(b, 'proj_out', fromTokens(tokens, h, w), { inChannels: c, outChannels: c, kernel: 1 });
  return F.add(out, x);
}
