// diffusers unet_2d_blocks.py: the five block types SD 1.x / 2.x / SDXL use.
import type { GraphBuilder, SymTensor } from '../graph/builder.js';
import * as F from '../graph/functional.js';
import { downsample, resnetBlock, upsample } from './resnet.js';
import { transformer2d } from './transformer-2d.js';
import type { DownBlockType, UpBlockType } from './unet-config.js';

export interface BlockContext {
  temb: SymTensor;
  context: SymTensor;
  groups: number;
  eps: number;
  tembChannels: number;
  linearProjection: boolean;
}

export interface DownBlockSpec {
  type: DownBlockType;
  inChannels: number;
  outChannels: number;
  layers: number;
  transformerLayers: number;
  heads: number;
  addDownsample: boolean;
  downsamplePadding: number;
}

function resnet(
  b: GraphBuilder,
  i: number,
  x: SymTensor,
  inChannels: number,
  outChannels: number,
  ctx: BlockContext,
) {
  return b.scope('resnets', () =>
    b.scope(i, () =>
      resnetBlock(b, x, ctx.temb, {
        inChannels,
        outChannels,
        groups: ctx.groups,
        eps: ctx.eps,
        tembChannels: ctx.tembChannels,
      }),
    ),
  );
}

function transformer(
  b: GraphBuilder,
  i: number,
  x: SymTensor,
  heads: number,
  layers: number,
  ctx: BlockContext,
) {
  return b.scope('attentions', () =>
    b.scope(i, () =>
      transformer2d(b, x, ctx.context, {
        heads,
        layers,
        groups: ctx.groups,
        linearProjection: ctx.linearProjection,
      }),
    ),
  );
}

/** DownBlock2D / CrossAttnDownBlock2D: returns the output and the skip connections it leaves behind. */
export function downBlock(
  b: GraphBuilder,
  x: SymTensor,
  s: DownBlockSpec,
  ctx: BlockContext,
): { out: SymTensor; skips: SymTensor[] } {
  const skips: SymTensor[] = [];
  let h = x;
  for (let i = 0; i < s.layers; i++) {
    h = resnet(b, i, h, i === 0 ? s.inChannels : s.outChannels, s.outChannels, ctx);
    if (s.type === 'CrossAttnDownBlock2D') h = transformer(b, i, h, s.heads, s.transformerLayers, ctx);
    skips.push(h);
  }
  if (s.addDownsample) {
    h = downsample(b, h, s.outChannels, s.downsamplePadding);
    skips.push(h);
  }
  return { out: h, skips };
}

export interface MidBlockSpec {
  channels: number;
  heads: number;
  transformerLayers: number;
}

/** UNetMidBlock2DCrossAttn: resnet, then (attention, resnet) once. */
export function midBlock(b: GraphBuilder, x: SymTensor, s: MidBlockSpec, ctx: BlockContext): SymTensor {
  let h = resnet(b, 0, x, s.channels, s.channels, ctx);
  h = transformer(b, 0, h, s.heads, s.transformerLayers, ctx);
  return resnet(b, 1, h, s.channels, s.channels, ctx);
}

export interface UpBlockSpec {
  type: UpBlockType;
  /** Channels of the matching down block's input (the last skip's width). */
  inChannels: number;
  prevOutputChannels: number;
  outChannels: number;
  layers: number;
  transformerLayers: number;
  heads: number;
  addUpsample: boolean;
}

/** UpBlock2D / CrossAttnUpBlock2D: consumes `skips` from the end; `upsampleSize` for odd-sized skips. */
export function upBlock(
  b: GraphBuilder,
  x: SymTensor,
  skips: SymTensor[],
  s: UpBlockSpec,
  ctx: BlockContext,
  upsampleSize?: readonly [number, number],
): SymTensor {
  let h = x;
  for (let i = 0; i < s.layers; i++) {
    const skip = skips.pop();
    if (!skip) throw new Error(`up block at '${b.path}': ran out of skip connections`);
    const skipChannels = i === s.layers - 1 ? s.inChannels : s.outChannels;
    const inChannels = (i === 0 ? s.prevOutputChannels : s.outChannels) + skipChannels;
    h = F.concat([h, skip], 1);
    h = resnet(b, i, h, inChannels, s.outChannels, ctx);
    if (s.type === 'CrossAttnUpBlock2D') h = transformer(b, i, h, s.heads, s.transformerLayers, ctx);
  }
  return s.addUpsample ? upsample(b, h, s.outChannels, upsampleSize) : h;
}
