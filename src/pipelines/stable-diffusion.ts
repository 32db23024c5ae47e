// diffusers' StableDiffusionPipeline (SD 1.x / 2.x text-to-image) on one device.
import { join } from 'node:path';
import { readJson } from '../io/diffusers-folder.js';
import type { Tensor } from '../io/tensor.js';
import { AutoencoderKL } from '../models/autoencoder-kl.js';
import { CLIPTextModel } from '../models/clip-text-model.js';
import { CLIPTokenizer } from '../models/clip-tokenizer.js';
import { UNet2DConditionModel } from '../models/unet-2d-condition.js';
import { type Conditioning, defaultSize, type ModelRunners, textToImage } from './denoise.js';
import { asList, type GenerateOptions, type GenerateResult, positiveInt } from './generate-options.js';
import { loadComponents } from './load-components.js';
import type { PipelineOptions } from './stable-diffusion-xl.js';
import { concatBatch, repeatEach } from './tensor-ops.js';

export interface SDComponents {
  unet: UNet2DConditionModel;
  vae: AutoencoderKL;
  textEncoder: CLIPTextModel;
  tokenizer: CLIPTokenizer;
  schedulerConfig: Readonly<Record<string, unknown>>;
}

export class StableDiffusionPipeline {
  constructor(readonly components: SDComponents) {}

  static async fromPretrained(dir: string, options: PipelineOptions = {}): Promise<StableDiffusionPipeline> {
    await readJson(join(dir, 'model_index.json'));
    const [unet, vae, textEncoder, tokenizer, schedulerConfig] = await loadComponents([
      UNet2DConditionModel.fromPretrained(join(dir, 'unet'), options),
      AutoencoderKL.fromPretrained(join(dir, 'vae'), options),
      CLIPTextModel.fromPretrained(join(dir, 'text_encoder'), options),
      CLIPTokenizer.fromPretrained(join(dir, 'tokenizer')),
      readJson(join(dir, 'scheduler', 'scheduler_config.json')),
    ]);
    return new StableDiffusionPipeline({ unet, vae, textEncoder, tokenizer, schedulerConfig });
  }

  get defaultSize(): [number, number] {
    return defaultSize(this.components.unet, this.components.vae);
  }

  /** encode_prompt without clip skip: the text encoder's last hidden state (final layer norm applied). */
  async encodePrompt(prompts: string[]): Promise<Tensor> {
    const c = this.components;
    const ids = prompts.map((p) => c.tokenizer.encode(p, { maxLength: 77 }));
    return (await c.textEncoder.forward(ids)).lastHiddenState;
  }

  async conditioning(o: GenerateOptions, cfg: boolean): Promise<{ cond: Conditioning; images: number }> {
    const perPrompt = positiveInt('numImagesPerPrompt', o.numImagesPerPrompt, 1);
    const pos = o.promptEmbeds ?? (await this.encodePrompt(asList('prompt', o.prompt)!));
    const n = pos.shape[0]!;
    const p = repeatEach(pos, perPrompt);
    if (!cfg) return { cond: { encoderHiddenStates: p }, images: n * perPrompt };
    // SD has no zeroing: a missing negative prompt is the empty prompt.
    const neg =
      o.negativePromptEmbeds ??
      (await this.encodePrompt(asList('negativePrompt', o.negativePrompt, n) ?? new Array(n).fill('')));
    return {
      cond: { encoderHiddenStates: concatBatch(repeatEach(neg, perPrompt), p) },
      images: n * perPrompt,
    };
  }

  async generate(options: GenerateOptions, runners?: ModelRunners): Promise<GenerateResult> {
    const c = this.components;
    const parts = {
      unet: c.unet,
      vae: c.vae,
      schedulerConfig: c.schedulerConfig,
      defaultGuidance: 7.5,
      conditioning: (o: GenerateOptions, _h: number, _w: number, cfg: boolean) => this.conditioning(o, cfg),
    };
    return textToImage(parts, options, runners);
  }

  async dispose(): Promise<void> {
    const c = this.components;
    await Promise.all([c.unet.dispose(), c.vae.dispose(), c.textEncoder.dispose()]);
  }
}
