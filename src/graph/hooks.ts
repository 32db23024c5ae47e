// The seam between models and parallel execution, like a diffusers attention processor: model code calls
// these at its exchange points (identified by checkpoint path), a parallel runtime implements them.
// With no hooks, every site computes the plain single-device result.
import type { SymTensor } from './builder.js';

export interface Conv2dSite {
  /** Checkpoint path of the conv module, e.g. `down_blocks.0.resnets.1.conv2`. */
  path: string;
  x: SymTensor;
  kernel: readonly [number, number];
  stride: number;
  padding: readonly [number, number];
}

export interface Conv2dInput {
  /** The input to convolve, possibly with halo rows attached. */
  x: SymTensor;
  /** Remaining zero padding, ONNX order [top, left, bottom, right]. */
  pads: readonly [number, number, number, number];
}

export interface GroupNormSite {
  path: string;
  x: SymTensor;
  groups: number;
  eps: number;
}

export interface SelfAttentionSite {
  path: string;
  /** This band's keys and values, each [B, tokens, C]. */
  k: SymTensor;
  v: SymTensor;
}

export interface AttentionKV {
  k: SymTensor;
  v: SymTensor;
}

export interface ExchangeHooks {
  /** Replaces a convolution's input and padding; undefined keeps the plain conv. */
  conv2dInput?(site: Conv2dSite): Conv2dInput | undefined;
  /**
   * Statistics to normalise with, [B, groups, 2] = (E[x], E[x²]) per group; undefined keeps the plain
   * GroupNorm over the tensor as it is.
   */
  groupNormStats?(site: GroupNormSite): SymTensor | undefined;
  /** The keys and values self-attention attends to; undefined keeps this band's own. */
  selfAttentionKV?(site: SelfAttentionSite): AttentionKV | undefined;
}
