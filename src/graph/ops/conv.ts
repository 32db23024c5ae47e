import type { SymTensor } from '../builder.js';
import { nchwcBlockOf } from '../nchwc.js';
import { attr, NCHWC_DOMAIN } from '../onnx-model.js';
import { expectRank, fail, fmt } from './common.js';

export interface Conv2dOptions {
  stride?: number;
  /** ONNX order [top, left, bottom, right]. */
  pads?: readonly [number, number, number, number];
  groups?: number;
}

/** torch.nn.functional.conv2d with explicit (possibly asymmetric) zero padding. */
export function conv2d(
  x: SymTensor,
  weight: SymTensor,
  bias: SymTensor | null,
  opts: Conv2dOptions = {},
): SymTensor {
  expectRank('Conv', x, 4);
  expectRank('Conv', weight, 4, 'weight');
  const stride = opts.stride ?? 1;
  const pads = opts.pads ?? [0, 0, 0, 0];
  const groups = opts.groups ?? 1;
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const [o, ci, kh, kw] = weight.shape as [number, number, number, number];
  if (ci * groups !== c) {
    fail(
      'Conv',
      x,
      `input ${fmt(x.shape)} has ${c} channels, weight ${fmt(weight.shape)} with ${groups} group(s) expects ${ci * groups}`,
    );
  }
  if (bias && (bias.rank !== 1 || bias.dim(0) !== o))
    fail('Conv', x, `bias ${fmt(bias.shape)} does not match ${o} output channels`);
  const oh = Math.floor((h + pads[0] + pads[2] - kh) / stride) + 1;
  const ow = Math.floor((w + pads[1] + pads[3] - kw) / stride) + 1;
  if (oh <= 0 || ow <= 0) fail('Conv', x, `input ${fmt(x.shape)} is smaller than the ${kh}x${kw} kernel`);
  const attrs = {
    kernel_shape: attr.ints([kh, kw]),
    strides: attr.ints([stride, stride]),
    pads: attr.ints(pads),
    group: attr.int(groups),
    dilations: attr.ints([1, 1]),
  };
  const out = [{ dtype: 'float32' as const, shape: [n, o, oh, ow] }];
  const block = nchwcBlockOf(x.graph.weightLayout(weight));
  if (block !== undefined) {
    // The filter is stored channel-blocked: run MLAS's NCHWc kernel, reordering the activations around it.
    if (groups !== 1 || c % block !== 0 || o % block !== 0) {
      fail(
        'Conv',
        x,
        `weight ${fmt(weight.shape)} is stored for NCHWc blocks of ${block}, which needs group 1 and whole blocks`,
      );
    }
    const g = x.graph;
    const [blocked] = g.node('ReorderInput', [x], [{ dtype: 'float32', shape: x.shape }], {}, NCHWC_DOMAIN);
    const [y] = g.node(
      'Conv',
      bias ? [blocked!, weight, bias] : [blocked!, weight],
      out,
      attrs,
      NCHWC_DOMAIN,
      'ConvNchwc',
    );
    return g.node('ReorderOutput', [y!], out, { channels: attr.int(o) }, NCHWC_DOMAIN)[0]!;
  }
  const inputs = bias ? [x, weight, bias] : [x, weight];
  return x.graph.node('Conv', inputs, out, attrs)[0]!;
}
