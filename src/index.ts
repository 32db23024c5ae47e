// The public API of distrifusion.

export type { RgbImage } from './io/png.js';
export { decodePng, encodePng, imageFromTensor, writeFileAtomic } from './io/png.js';
export type { WriteSafetensorsOptions } from './io/safetensors.js';
export { readSafetensors, SafetensorsFile, writeSafetensors } from './io/safetensors.js';
export type { AnyTensor, Int64Tensor, Tensor } from './io/tensor.js';
export type { LatentDistribution } from './models/autoencoder-kl.js';
export { AutoencoderKL } from './models/autoencoder-kl.js';
export type { CLIPTextOutput, CLIPTextWithProjectionOutput, TokenIds } from './models/clip-text-model.js';
export { CLIPTextModel, CLIPTextModelWithProjection } from './models/clip-text-model.js';
export type { EncodeOptions } from './models/clip-tokenizer.js';
export { CLIPTokenizer } from './models/clip-tokenizer.js';
export type { ModelOptions, UNetForwardInputs } from './models/unet-2d-condition.js';
export { UNet2DConditionModel } from './models/unet-2d-condition.js';
export type {
  DistriConfig,
  DistriConfigInput,
  Parallelism,
  SplitScheme,
  SyncMode,
} from './parallel/config.js';
export { distriConfig, PARALLELISMS, SPLIT_SCHEMES, SYNC_MODES } from './parallel/config.js';
export { RANK_MALLOC_TUNABLES, withRankMallocTunables } from './parallel/malloc-tunables.js';
export { DistriSDPipeline, DistriSDXLPipeline } from './pipelines/distri-pipelines.js';
export type { GenerateOptions, GenerateResult, StepProgress } from './pipelines/generate-options.js';
export { StableDiffusionPipeline } from './pipelines/stable-diffusion.js';
export type { PipelineOptions } from './pipelines/stable-diffusion-xl.js';
export { StableDiffusionXLPipeline } from './pipelines/stable-diffusion-xl.js';
export { Generator, randn } from './schedulers/random.js';
export type { Scheduler, SchedulerName, StepResult } from './schedulers/scheduler.js';
export { createScheduler, SCHEDULER_NAMES, schedulerFromConfig } from './schedulers/scheduler.js';
