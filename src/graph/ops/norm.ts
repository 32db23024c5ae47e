import type { SymTensor } from '../builder.js';
import { attr } from '../onnx-model.js';
import { expectRank, fail, fmt } from './common.js';
import { add, div, mul, sqrt, sub } from './elementwise.js';
import { concat, reduceMean, reshape, slice } from './shape.js';

function checkAffine(op: string, x: SymTensor, c: number, weight: SymTensor, bias: SymTensor): void {
  if (weight.rank !== 1 || weight.dim(0) !== c || bias.rank !== 1 || bias.dim(0) !== c) {
    fail(
      op,
      x,
      `weight ${fmt(weight.shape)} / bias ${fmt(bias.shape)} must both be [${c}] for input ${fmt(x.shape)}`,
    );
  }
}

function checkGroups(x: SymTensor, groups: number): void {
  expectRank('GroupNorm', x, 4);
  if (x.dim(1) % groups !== 0)
    fail('GroupNorm', x, `${x.dim(1)} channels do not split into ${groups} groups`);
}

/** torch.nn.GroupNorm over the whole tensor (biased variance), via InstanceNormalization on [N, G, -1]. */
export function groupNorm(
  x: SymTensor,
  groups: number,
  eps: number,
  weight: SymTensor,
  bias: SymTensor,
): SymTensor {
  checkGroups(x, groups);
  const [n, c, h, w] = x.shape as [number, number, number, number];
  checkAffine('GroupNorm', x, c, weight, bias);
  const g = x.graph;
  const grouped = reshape(x, [n, groups, (c / groups) * h * w]);
  const ones = g.constFloat(new Array(groups).fill(1));
  const zeros = g.constFloat(new Array(groups).fill(0));
  const normed = g.node(
    'InstanceNormalization',
    [grouped, ones, zeros],
    [{ dtype: 'float32', shape: grouped.shape }],
    {
      epsilon: attr.float(eps),
    },
  )[0]!;
  return add(mul(reshape(normed, [n, c, h, w]), reshape(weight, [c, 1, 1])), reshape(bias, [c, 1, 1]));
}

/** Per-group (E[x], E[x²]) of a [N, C, H, W] tensor: [N, G, 2]. */
export function groupMoments(x: SymTensor, groups: number): SymTensor {
  checkGroups(x, groups);
  const [n] = x.shape as [number];
  const grouped = reshape(x, [n, groups, -1]);
  return concat([reduceMean(grouped, [2]), reduceMean(mul(grouped, grouped), [2])], 2);
}

/** (E[x], E[x²]) → (mean, biased variance). */
export function momentsToStats(moments: SymTensor): SymTensor {
  const mean = slice(moments, 2, 0, 1);
  const meanSq = slice(moments, 2, 1, 2);
  return concat([mean, sub(meanSq, mul(mean, mean))], 2);
}

/** GroupNorm with given per-group (mean, variance) [N, G, 2]: (x − mean) / sqrt(var + eps) · w + b. */
export function groupNormWithStats(
  x: SymTensor,
  stats: SymTensor,
  groups: number,
  eps: number,
  weight: SymTensor,
  bias: SymTensor,
): SymTensor {
  checkGroups(x, groups);
  const [n, c] = x.shape as [number, number];
  checkAffine('GroupNorm', x, c, weight, bias);
  if (stats.rank !== 3 || stats.dim(0) !== n || stats.dim(1) !== groups || stats.dim(2) !== 2) {
    fail('GroupNorm', x, `stats must be [${n}, ${groups}, 2], got ${fmt(stats.shape)}`);
  }
  const perGroup = c / groups;
  const mean = slice(stats, 2, 0, 1); // [N, G, 1]
  const std = sqrt(add(slice(stats, 2, 1, 2), eps));
  const scale = reshape(div(reshape(weight, [1, groups, perGroup]), std), [n, c, 1, 1]);
  const spread = x.graph.constFloat(new Array(perGroup).fill(1), [1, 1, perGroup]);
  const meanPerChannel = reshape(mul(mean, spread), [n, c, 1, 1]);
  return add(mul(sub(x, meanPerChannel), scale), reshape(bias, [c, 1, 1]));
}

/** torch.nn.LayerNorm over the last axis. */
export function layerNorm(x: SymTensor, weight: SymTensor, bias: SymTensor, eps: number): SymTensor {
  const c = x.dim(-1);
  checkAffine('LayerNormalization', x, c, weight, bias);
  return x.graph.node('LayerNormalization', [x, weight, bias], [{ dtype: 'float32', shape: x.shape }], {
    axis: attr.int(-1),
    epsilon: attr.float(eps),
  })[0]!;
}
