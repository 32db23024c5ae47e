// The UNet and VAE config.json files of the two models the benchmarks default to, embedded so that `bench`
// needs no download: runwayml/stable-diffusion-v1-5 (commit 1d0c4ebf, CreativeML OpenRAIL-M) and
// stabilityai/stable-diffusion-xl-base-1.0 (commit 46216598, CreativeML OpenRAIL++-M), unet/config.json and
// vae/config.json.
// A test checks them against the copies in the reference fixtures.
import type { JsonObject } from '../io/diffusers-folder.js';

export type PresetName = 'sd15' | 'sdxl';

export interface Preset {
  name: PresetName;
  /** Hub repository the config comes from. */
  repo: string;
  unetConfig: JsonObject;
  vaeConfig: JsonObject;
  /** The UNet batch of the standard benchmark (SD 1.5: the two CFG halves of one image). */
  batch: number;
}

const SD15_UNET: JsonObject = {
  _class_name: 'UNet2DConditionModel',
  _diffusers_version: '0.6.0',
  act_fn: 'silu',
  attention_head_dim: 8,
  block_out_channels: [320, 640, 1280, 1280],
  center_input_sample: false,
  cross_attention_dim: 768,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  downsample_padding: 1,
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 4,
  layers_per_block: 2,
  mid_block_scale_factor: 1,
  norm_eps: 1e-5,
  norm_num_groups: 32,
  out_channels: 4,
  sample_size: 64,
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
};

const SDXL_UNET: JsonObject = {
  _class_name: 'UNet2DConditionModel',
  _diffusers_version: '0.19.0.dev0',
  act_fn: 'silu',
  addition_embed_type: 'text_time',
  addition_embed_type_num_heads: 64,
  addition_time_embed_dim: 256,
  attention_head_dim: [5, 10, 20],
  block_out_channels: [320, 640, 1280],
  center_input_sample: false,
  class_embed_type: null,
  class_embeddings_concat: false,
  conv_in_kernel: 3,
  conv_out_kernel: 3,
  cross_attention_dim: 2048,
  cross_attention_norm: null,
  down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
  downsample_padding: 1,
  dual_cross_attention: false,
  encoder_hid_dim: null,
  encoder_hid_dim_type: null,
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 4,
  layers_per_block: 2,
  mid_block_only_cross_attention: null,
  mid_block_scale_factor: 1,
  mid_block_type: 'UNetMidBlock2DCrossAttn',
  norm_eps: 1e-5,
  norm_num_groups: 32,
  num_attention_heads: null,
  num_class_embeds: null,
  only_cross_attention: false,
  out_channels: 4,
  projection_class_embeddings_input_dim: 2816,
  resnet_out_scale_factor: 1.0,
  resnet_skip_time_act: false,
  resnet_time_scale_shift: 'default',
  sample_size: 128,
  time_cond_proj_dim: null,
  time_embedding_act_fn: null,
  time_embedding_dim: null,
  time_embedding_type: 'positional',
  timestep_post_act: null,
  transformer_layers_per_block: [1, 2, 10],
  up_block_types: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'],
  upcast_attention: null,
  use_linear_projection: true,
};

const VAE_BLOCKS = {
  act_fn: 'silu',
  block_out_channels: [128, 256, 512, 512],
  down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'],
  in_channels: 3,
  latent_channels: 4,
  layers_per_block: 2,
  norm_num_groups: 32,
  out_channels: 3,
  up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
};

const SD15_VAE: JsonObject = {
  _class_name: 'AutoencoderKL',
  _diffusers_version: '0.6.0',
  ...VAE_BLOCKS,
  sample_size: 512,
};

const SDXL_VAE: JsonObject = {
  _class_name: 'AutoencoderKL',
  _diffusers_version: '0.20.0.dev0',
  _name_or_path: '../sdxl-vae/',
  ...VAE_BLOCKS,
  force_upcast: true,
  sample_size: 1024,
  scaling_factor: 0.13025,
};

export const PRESETS: Readonly<Record<PresetName, Preset>> = {
  sd15: {
    name: 'sd15',
    repo: 'runwayml/stable-diffusion-v1-5',
    unetConfig: SD15_UNET,
    vaeConfig: SD15_VAE,
    batch: 2,
  },
  sdxl: {
    name: 'sdxl',
    repo: 'stabilityai/stable-diffusion-xl-base-1.0',
    unetConfig: SDXL_UNET,
    vaeConfig: SDXL_VAE,
    batch: 1,
  },
};

export function isPresetName(s: string): s is PresetName {
  return s in PRESETS;
}
