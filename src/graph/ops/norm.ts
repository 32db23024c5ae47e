import type { SymTensor } from '../builder.js';
import { attr } from '../onnx-model.js';
import { expectRank, fail, fmt } from './common.js';
import { add, div, mul, sub } from './elementwise.js';
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
  const count = grouped.dim(2);
  // ReduceSumSquare reads x once instead of materialising x².
  const sumSq = grouped.graph.node(
    'ReduceSumSquare',
    [grouped],
    [{ dtype: 'float32', shape: [n, groups, 1] }],
    {
      axes: attr.ints([2]),
      keepdims: attr.int(1),
    },
  )[0]!;
  return concat([reduceMean(grouped, [2]), div(sumSq, count)], 2);
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
  const [, , h, w] = x.shape as [number, number, number, number];
  const g = x.graph;
  // One pass: BatchNormalization over [1, N·C, H, W] with the per-(n, c) statistics as its running stats.
  const perGroup = c / groups;
  const spread = g.constFloat(new Array(perGroup).fill(1), [1, 1, perGroup]);
  const perChannel = (t: SymTensor) => reshape(mul(t, spread), [n * c]);
  const batch = g.constFloat(new Array(n).fill(1), [n, 1]);
  const tiled = (t: SymTensor) => reshape(mul(reshape(t, [1, c]), batch), [n * c]);
  const y = g.node(
    'BatchNormalization',
    [
      reshape(x, [1, n * c, h, w]),
      tiled(weight),
      tiled(bias),
      perChannel(slice(stats, 2, 0, 1)),
      perChannel(slice(stats, 2, 1, 2)),
    ],
    [{ dtype: 'float32', shape: [1, n * c, h, w] }],
    { epsilon: attr.float(eps) },
  )[0]!;
  return reshape(y, [n, c, h, w]);
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
