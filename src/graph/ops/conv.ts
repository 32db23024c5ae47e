import type { SymTensor } from '../builder.js';
import { attr } from '../onnx-model.js';
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
  const inputs = bias ? [x, weight, bias] : [x, weight];
  return x.graph.node('Conv', inputs, [{ dtype: 'float32', shape: [n, o, oh, ow] }], {
    kernel_shape: attr.ints([kh, kw]),
    strides: attr.ints([stride, stride]),
    pads: attr.ints(pads),
    group: attr.int(groups),
    dilations: attr.ints([1, 1]),
  })[0]!;
}
