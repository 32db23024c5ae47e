// The public API of distrifusion.
export type { AnyTensor, Int64Tensor, Tensor } from './io/tensor.js';
export { readSafetensors, SafetensorsFile, writeSafetensors } from './io/safetensors.js';
export type { WriteSafetensorsOptions } from './io/safetensors.js';
export { decodePng, encodePng, imageFromTensor, writeFileAtomic } from './io/png.js';
export type { RgbImage } from './io/png.js';

export { UNet2DConditionModel } from './models/unet-2d-condition.js';
export type { ModelOptions, UNetForwardInputs } from './models/unet-2d-condition.js';
export { AutoencoderKL } from './models/autoencoder-kl.js';
export type { LatentDistribution } from './models/autoencoder-kl.js';
export { CLIPTextModel, CLIPTextModelWithProjection } from './models/clip-text-model.js';
export type { CLIPTextOutput, CLIPTextWithProjectionOutput, TokenIds } from './models/clip-text-model.js';
export { CLIPTokenizer } from './models/clip-tokenizer.js';
export type { EncodeOptions } from './models/clip-tokenizer.js';

export { createScheduler, schedulerFromConfig, SCHEDULER_NAMES } from './schedulers/scheduler.js';
export type { Scheduler, SchedulerName, StepResult } from './schedulers/scheduler.js';
export { Generator, randn } from './schedulers/random.js';

export { distriConfig, SYNC_MODES, PARALLELISMS, SPLIT_SCHEMES } from './parallel/config.js';
export type { DistriConfig, DistriConfigInput, Parallelism, SplitScheme, SyncMode } from './parallel/config.js';

export { StableDiffusionPipeline } from './pipelines/stable-diffusion.js';
export { StableDiffusionXLPipeline } from './pipelines/stable-diffusion-xl.js';
export type { PipelineOptions } from './pipelines/stable-diffusion-xl.js';
export { DistriSDPipeline, DistriSDXLPipeline } from './pipelines/distri-pipelines.js';
export type { GenerateOptions, GenerateResult, StepProgress } from './pipelines/generate-options.js';
