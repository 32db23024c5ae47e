// The configuration files of the built-in demo model: SDXL's structure (two CLIP text encoders, a
// text_time UNet, a 4-block AutoencoderKL with scale factor 8) at tiny widths. Every value not about
// size is the real stabilityai/stable-diffusion-xl-base-1.0 one.

type Json = Record<string, unknown>;

/** Folder name in the cache; bump it whenever any file of the model would change. */
export const DEMO_MODEL_FORMAT = 'demo-sdxl-v1';
/** Seed of the weights (each tensor draws from its own generator, seeded from this and its key). */
export const DEMO_MODEL_SEED = 20240527;

/** Hidden size of both text encoders; their penultimate states side by side are the cross-attention input. */
const TEXT_HIDDEN = 32;
const TEXT_PROJECTION = 32;
const TIME_EMBED = 8;

export const MODEL_INDEX: Json = {
  _class_name: 'StableDiffusionXLPipeline',
  _diffusers_version: '0.24.0',
  force_zeros_for_empty_prompt: true,
  add_watermarker: null,
  scheduler: ['diffusers', 'EulerDiscreteScheduler'],
  text_encoder: ['transformers', 'CLIPTextModel'],
  text_encoder_2: ['transformers', 'CLIPTextModelWithProjection'],
  tokenizer: ['transformers', 'CLIPTokenizer'],
  tokenizer_2: ['transformers', 'CLIPTokenizer'],
  unet: ['diffusers', 'UNet2DConditionModel'],
  vae: ['diffusers', 'AutoencoderKL'],
};

/** SDXL base 1.0's scheduler/scheduler_config.json, value for value. */
export const SCHEDULER_CONFIG: Json = {
  _class_name: 'EulerDiscreteScheduler',
  _diffusers_version: '0.19.0.dev0',
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  clip_sample: false,
  interpolation_type: 'linear',
  num_train_timesteps: 1000,
  prediction_type: 'epsilon',
  sample_max_value: 1.0,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  timestep_spacing: 'leading',
  trained_betas: null,
  use_karras_sigmas: false,
};

export const UNET_CONFIG: Json = {
  _class_name: 'UNet2DConditionModel',
  _diffusers_version: '0.24.0',
  act_fn: 'silu',
  addition_embed_type: 'text_time',
  addition_embed_type_num_heads: 64,
  addition_time_embed_dim: TIME_EMBED,
  // diffusers' misnomer: these are head counts (SDXL: 5, 10, 20)
  attention_head_dim: [1, 2, 4],
  block_out_channels: [32, 64, 64],
  center_input_sample: false,
  class_embed_type: null,
  class_embeddings_concat: false,
  conv_in_kernel: 3,
  conv_out_kernel: 3,
  cross_attention_dim: 2 * TEXT_HIDDEN,
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
  norm_num_groups: 16,
  num_attention_heads: null,
  num_class_embeds: null,
  only_cross_attention: false,
  out_channels: 4,
  // 6 size/crop ids × addition_time_embed_dim + text_encoder_2's pooled projection
  projection_class_embeddings_input_dim: 6 * TIME_EMBED + TEXT_PROJECTION,
  resnet_out_scale_factor: 1.0,
  resnet_skip_time_act: false,
  resnet_time_scale_shift: 'default',
  // 32 latent rows = 256 px: the default output size
  sample_size: 32,
  time_cond_proj_dim: null,
  time_embedding_act_fn: null,
  time_embedding_dim: null,
  time_embedding_type: 'positional',
  timestep_post_act: null,
  transformer_layers_per_block: [1, 1, 2],
  up_block_types: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'],
  upcast_attention: null,
  use_linear_projection: true,
};

export const VAE_CONFIG: Json = {
  _class_name: 'AutoencoderKL',
  _diffusers_version: '0.24.0',
  act_fn: 'silu',
  block_out_channels: [16, 32, 64, 64],
  down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'],
  force_upcast: true,
  in_channels: 3,
  latent_channels: 4,
  layers_per_block: 1,
  norm_num_groups: 8,
  out_channels: 3,
  sample_size: 256,
  scaling_factor: 0.13025,
  up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
};

function textConfig(architecture: string, o: { act: string; intermediate: number; heads: number }): Json {
  return {
    architectures: [architecture],
    attention_dropout: 0.0,
    bos_token_id: 0,
    dropout: 0.0,
    eos_token_id: 2,
    hidden_act: o.act,
    hidden_size: TEXT_HIDDEN,
    initializer_factor: 1.0,
    initializer_range: 0.02,
    intermediate_size: o.intermediate,
    layer_norm_eps: 1e-5,
    max_position_embeddings: 77,
    model_type: 'clip_text_model',
    num_attention_heads: o.heads,
    num_hidden_layers: 3,
    pad_token_id: 1,
    projection_dim: TEXT_PROJECTION,
    torch_dtype: 'float16',
    transformers_version: '4.36.0',
    vocab_size: 49408,
  };
}

/** SDXL's text_encoder: CLIP ViT-L's text tower (quick_gelu). */
export const TEXT_ENCODER_CONFIG = textConfig('CLIPTextModel', {
  act: 'quick_gelu',
  intermediate: 64,
  heads: 4,
});
/** SDXL's text_encoder_2: OpenCLIP bigG's text tower (gelu) with a projection. */
export const TEXT_ENCODER_2_CONFIG = textConfig('CLIPTextModelWithProjection', {
  act: 'gelu',
  intermediate: 128,
  heads: 2,
});

const addedToken = (content: string): Json => ({
  content,
  lstrip: false,
  normalized: true,
  rstrip: false,
  single_word: false,
});

/** tokenizer_config.json and special_tokens_map.json as in SDXL's folders; tokenizer_2 pads with "!". */
export function tokenizerConfigs(padToken: string): { config: Json; specialTokens: Json } {
  const bos = addedToken('<|startoftext|>');
  const eos = addedToken('<|endoftext|>');
  return {
    config: {
      add_prefix_space: false,
      bos_token: { __type: 'AddedToken', ...bos },
      clean_up_tokenization_spaces: true,
      do_lower_case: true,
      eos_token: { __type: 'AddedToken', ...eos },
      errors: 'replace',
      model_max_length: 77,
      pad_token: padToken,
      tokenizer_class: 'CLIPTokenizer',
      unk_token: { __type: 'AddedToken', ...eos },
    },
    specialTokens: { bos_token: bos, eos_token: eos, pad_token: padToken, unk_token: eos },
  };
}
