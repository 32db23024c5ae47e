// diffusers resnet.py: ResnetBlock2D, Downsample2D, Upsample2D (the variants SD / SDXL checkpoints use).
import type { GraphBuilder, SymTensor } from '../graph/builder.js';
import * as F from '../graph/functional.js';
import { conv2d, groupNorm, linear } from './layers.js';

export interface ResnetSpec {
  inChannels: number;
  outChannels: number;
  groups: number;
  eps: number;
  /** Width of the time embedding; absent in the VAE. */
  tembChannels?: number;
  outputScaleFactor?: number;
}

/** ResnetBlock2D with time_embedding_norm 'default' and SiLU. */
export function resnetBlock(
  b: GraphBuilder,
  x: SymTensor,
  temb: SymTensor | undefined,
  s: ResnetSpec,
): SymTensor {
  let h = F.silu(groupNorm(b, 'norm1', x, s.groups, s.eps));
  h = conv2d(b, 'conv1', h, { inChannels: s.inChannels, outChannels: s.outChannels, kernel: 3, padding: 1 });
  if (temb && s.tembChannels !== undefined) {
    const t = linear(b, 'time_emb_proj', F.silu(temb), s.outChannels);
    h = F.add(h, F.reshape(t, [t.dim(0), s.outChannels, 1, 1]));
  }
  h = F.silu(groupNorm(b, 'norm2', h, s.groups, s.eps));
  // dropout is the identity at inference
  h = conv2d(b, 'conv2', h, { inChannels: s.outChannels, outChannels: s.outChannels, kernel: 3, padding: 1 });
  const shortcut =
    s.inChannels !== s.outChannels
      ? conv2d(b, 'conv_shortcut', x, { inChannels: s.inChannels, outChannels: s.outChannels, kernel: 1 })
      : x;
  const out = F.add(shortcut, h);
  const scale = s.outputScaleFactor ?? 1;
  return scale === 1 ? out : F.div(out, scale);
}

/**
 * Downsample2D with a conv: stride 2, `padding` on every side; padding 0 means diffusers' asymmetric
 * (0, 1, 0, 1) pad (the VAE encoder).
 */
export function downsample(b: GraphBuilder, x: SymTensor, channels: number, padding: number): SymTensor {
  return b.scope('downsamplers', () =>
    b.scope(0, () => {
      const input = padding === 0 ? F.pad2d(x, [0, 0, 1, 1]) : x;
      return conv2d(b, 'conv', input, {
        inChannels: channels,
        outChannels: channels,
        kernel: 3,
        stride: 2,
        padding,
      });
    }),
  );
}

/** Upsample2D: nearest 2x (to `size` when the skip connection is odd-sized), then a 3x3 conv. */
export function upsample(
  b: GraphBuilder,
  x: SymTensor,
  channels: number,
  size?: readonly [number, number],
): SymTensor {
  return b.scope('upsamplers', () =>
    b.scope(0, () => {
      const up = F.upsampleNearest2x(x, size);
      return conv2d(b, 'conv', up, { inChannels: channels, outChannels: channels, kernel: 3, padding: 1 });
    }),
  );
}
