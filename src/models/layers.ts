// Leaf modules shared by every model: each finds its weights by checkpoint key under the current module
// path and, where DistriFusion needs control, offers the call site to the exchange hooks.
import type { GraphBuilder, SymTensor } from '../graph/builder.js';
import * as F from '../graph/functional.js';

export interface Conv2dSpec {
  inChannels: number;
  outChannels: number;
  kernel: number;
  stride?: number;
  padding?: number;
  bias?: boolean;
}

/** nn.Conv2d `name`; kernels > 1 are exchange points (halo rows). */
export function conv2d(b: GraphBuilder, name: string, x: SymTensor, spec: Conv2dSpec): SymTensor {
  return b.scope(name, () => {
    const k = spec.kernel;
    const w = b.param('weight', [spec.outChannels, spec.inChannels, k, k]);
    const bias = spec.bias === false ? null : b.param('bias', [spec.outChannels]);
    const stride = spec.stride ?? 1;
    const p = spec.padding ?? 0;
    const site = { path: b.path, x, kernel: [k, k] as const, stride, padding: [p, p] as const };
    const custom = k > 1 ? b.hooks.conv2dInput?.(site) : undefined;
    const input = custom ?? { x, pads: [p, p, p, p] as const };
    return F.conv2d(input.x, w, bias, { stride, pads: input.pads });
  });
}

/** nn.GroupNorm `name` (affine); an exchange point for the statistics. */
export function groupNorm(
  b: GraphBuilder,
  name: string,
  x: SymTensor,
  groups: number,
  eps: number,
): SymTensor {
  return b.scope(name, () => {
    const c = x.dim(1);
    const w = b.param('weight', [c]);
    const bias = b.param('bias', [c]);
    const stats = b.hooks.groupNormStats?.({ path: b.path, x, groups, eps });
    return stats
      ? F.groupNormWithStats(x, stats, groups, eps, w, bias)
      : F.groupNorm(x, groups, eps, w, bias);
  });
}

/** nn.Linear `name`. */
export function linear(
  b: GraphBuilder,
  name: string,
  x: SymTensor,
  outFeatures: number,
  bias = true,
): SymTensor {
  return b.scope(name, () => {
    const w = b.param('weight', [outFeatures, x.dim(-1)]);
    return F.linear(x, w, bias ? b.param('bias', [outFeatures]) : null);
  });
}

/** nn.LayerNorm `name` over the last axis. */
export function layerNorm(b: GraphBuilder, name: string, x: SymTensor, eps: number): SymTensor {
  return b.scope(name, () => {
    const c = x.dim(-1);
    return F.layerNorm(x, b.param('weight', [c]), b.param('bias', [c]), eps);
  });
}

/** NCHW → [B, H·W, C] tokens. */
export function toTokens(x: SymTensor): SymTensor {
  const [n, c, h, w] = x.shape as [number, number, number, number];
  return F.reshape(F.transpose(x, [0, 2, 3, 1]), [n, h * w, c]);
}

/** [B, H·W, C] tokens → NCHW. */
export function fromTokens(x: SymTensor, h: number, w: number): SymTensor {
  const [n, , c] = x.shape as [number, number, number];
  return F.transpose(F.reshape(x, [n, h, w, c]), [0, 3, 1, 2]);
}
