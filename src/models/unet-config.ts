// UNet2DConditionModel config.json, parsed strictly for the SD 1.x / 2.x / SDXL subset. The confusing
// diffusers names are resolved here once: `attention_head_dim` (really the head count when
// `num_attention_heads` is null) becomes `heads` per block.
import type { JsonObject } from '../io/diffusers-folder.js';
import { ConfigReader } from './config.js';

export type DownBlockType = 'DownBlock2D' | 'CrossAttnDownBlock2D';
export type UpBlockType = 'UpBlock2D' | 'CrossAttnUpBlock2D';

export interface UNetConfig {
  inChannels: number;
  outChannels: number;
  blockOutChannels: number[];
  downBlockTypes: DownBlockType[];
  upBlockTypes: UpBlockType[];
  layersPerBlock: number[];
  transformerLayersPerBlock: number[];
  /** Attention heads per down block (mirrored for the up blocks). */
  heads: number[];
  crossAttentionDim: number;
  normNumGroups: number;
  normEps: number;
  flipSinToCos: boolean;
  freqShift: number;
  downsamplePadding: number;
  midBlockScaleFactor: number;
  linearProjection: boolean;
  /** Default latent size [h, w] (sample_size); pipelines default to this times the VAE factor. */
  sampleSize: [number, number];
  /** SDXL's micro-conditioning: 'text_time' adds pooled text embeds + size/crop ids to the time embedding. */
  additionEmbed?: { timeEmbedDim: number; inputDim: number };
  /** Keys in the file that this implementation did not need. */
  ignoredKeys: string[];
}

export function parseUNetConfig(json: JsonObject, file: string): UNetConfig {
  const r = new ConfigReader(file, json);
  const downBlockTypes = r.stringList<DownBlockType>('down_block_types', [
    'DownBlock2D',
    'CrossAttnDownBlock2D',
  ]);
  const upBlockTypes = r.stringList<UpBlockType>('up_block_types', ['UpBlock2D', 'CrossAttnUpBlock2D']);
  const n = downBlockTypes.length;
  if (upBlockTypes.length !== n) {
    throw new Error(`${file}: ${n} down blocks but ${upBlockTypes.length} up blocks`);
  }
  const blockOutChannels = r.intList('block_out_channels');
  if (blockOutChannels.length !== n) {
    throw new Error(`${file}: "block_out_channels" has ${blockOutChannels.length} entries, expected ${n}`);
  }
  r.string('mid_block_type', ['UNetMidBlock2DCrossAttn'], 'UNetMidBlock2DCrossAttn');
  r.string('act_fn', ['silu'], 'silu');
  r.expect('center_input_sample', false);
  r.expect('only_cross_attention', false);
  r.expect('dual_cross_attention', false);
  r.expect('class_embed_type', null);
  r.expect('num_class_embeds', null);
  r.expect('encoder_hid_dim', null);
  r.expect('encoder_hid_dim_type', null);
  r.expect('time_embedding_type', 'positional');
  r.expect('time_embedding_dim', null);
  r.expect('time_embedding_act_fn', null);
  r.expect('timestep_post_act', null);
  r.expect('time_cond_proj_dim', null);
  r.expect('resnet_time_scale_shift', 'default');
  r.expect('resnet_skip_time_act', false);
  r.expect('resnet_out_scale_factor', 1, 1.0);
  r.expect('conv_in_kernel', 3);
  r.expect('conv_out_kernel', 3);
  r.expect('attention_type', 'default');
  r.expect('class_embeddings_concat', false);
  r.expect('mid_block_only_cross_attention', null, false);
  r.expect('cross_attention_norm', null);
  r.expect('reverse_transformer_layers_per_block', null);
  // Computed in float32 throughout, so upcasting attention changes nothing.
  r.expect('upcast_attention', null, false, true);
  r.ignore('dropout', 'addition_embed_type_num_heads');

  const crossAttentionDim = r.int('cross_attention_dim');
  const numHeads = r.has('num_attention_heads') ? 'num_attention_heads' : 'attention_head_dim';
  const heads = r.intPerBlock(numHeads, n, 8);
  // With num_attention_heads set, attention_head_dim really is the head width (implied by the channels).
  if (numHeads === 'num_attention_heads') r.ignore('attention_head_dim');
  else r.ignore('num_attention_heads');

  const additionType = r.has('addition_embed_type')
    ? r.string('addition_embed_type', ['text_time'])
    : undefined;
  const config: UNetConfig = {
    inChannels: r.int('in_channels', 4),
    outChannels: r.int('out_channels', 4),
    blockOutChannels,
    downBlockTypes,
    upBlockTypes,
    layersPerBlock: r.intPerBlock('layers_per_block', n, 2),
    transformerLayersPerBlock: r.intPerBlock('transformer_layers_per_block', n, 1),
    heads,
    crossAttentionDim,
    normNumGroups: r.int('norm_num_groups', 32),
    normEps: r.number('norm_eps', 1e-5),
    flipSinToCos: r.bool('flip_sin_to_cos', true),
    freqShift: r.int('freq_shift', 0),
    downsamplePadding: r.int('downsample_padding', 1),
    midBlockScaleFactor: r.number('mid_block_scale_factor', 1),
    linearProjection: r.bool('use_linear_projection', false),
    sampleSize: sampleSize(r),
    ignoredKeys: [],
  };
  if (additionType === 'text_time') {
    config.additionEmbed = {
      timeEmbedDim: r.int('addition_time_embed_dim'),
      inputDim: r.int('projection_class_embeddings_input_dim'),
    };
  } else {
    r.expect('addition_time_embed_dim', null);
    r.expect('projection_class_embeddings_input_dim', null);
  }
  for (const [i, c] of blockOutChannels.entries()) {
    if (c % config.normNumGroups !== 0) {
      throw new Error(
        `${file}: block_out_channels[${i}] = ${c} is not divisible by norm_num_groups ${config.normNumGroups}`,
      );
    }
    if (c % heads[i]! !== 0)
      throw new Error(`${file}: block ${i}: ${c} channels do not split into ${heads[i]} heads`);
  }
  config.ignoredKeys = r.ignoredKeys();
  return config;
}

/** Number of 2x downsamplings: latent sizes must be divisible by 2^this for an exact round trip. */
export function downsampleCount(c: UNetConfig): number {
  return c.downBlockTypes.length - 1;
}

function sampleSize(r: ConfigReader): [number, number] {
  if (!r.has('sample_size')) {
    r.ignore('sample_size');
    return [64, 64];
  }
  const [h, w] = r.intPerBlock('sample_size', 2);
  return [h!, w!];
}
