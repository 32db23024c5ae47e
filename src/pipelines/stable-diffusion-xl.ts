// diffusers' StableDiffusionXLPipeline (text-to-image) on one device.

import { join } from 'node:path';
import { readJson } from '../io/diffusers-folder.js';
import type { Tensor } from '../io/tensor.js';
import { AutoencoderKL } from '../models/autoencoder-kl.js';
import { CLIPTextModel, CLIPTextModelWithProjection } from '../models/clip-text-model.js';
import { CLIPTokenizer } from '../models/clip-tokenizer.js';
import { type ModelOptions, UNet2DConditionModel } from '../models/unet-2d-condition.js';
import { type Conditioning, defaultSize, type ModelRunners, textToImage } from './denoise.js';
import { asList, type GenerateOptions, type GenerateResult, positiveInt } from './generate-options.js';
import { loadComponents } from './load-components.js';
import { concatBatch, repeatEach, zerosLike } from './tensor-ops.js';

export interface SDXLComponents {
  unet: UNet2DConditionModel;
  vae: AutoencoderKL;
  textEncoder: CLIPTextModel;
  textEncoder2: CLIPTextModelWithProjection;
  tokenizer: CLIPTokenizer;
  tokenizer2: CLIPTokenizer;
  schedulerConfig: Readonly<Record<string, unknown>>;
  /** model_index.json's force_zeros_for_empty_prompt: no negative prompt → zero negative embeddings. */
  forceZerosForEmptyPrompt: boolean;
}

export interface PipelineOptions extends ModelOptions {}

export class StableDiffusionXLPipeline {
  constructor(readonly components: SDXLComponents) {}

  static async fromPretrained(
    dir: string,
    options: PipelineOptions = {},
  ): Promise<StableDiffusionXLPipeline> {
    const index = await readJson(join(dir, 'model_index.json'));
    const [unet, vae, textEncoder, textEncoder2, tokenizer, tokenizer2, schedulerConfig] =
      await loadComponents([
        UNet2DConditionModel.fromPretrained(join(dir, 'unet'), options),
        AutoencoderKL.fromPretrained(join(dir, 'vae'), options),
        CLIPTextModel.fromPretrained(join(dir, 'text_encoder'), options),
        CLIPTextModelWithProjection.fromPretrained(join(dir, 'text_encoder_2'), options),
        CLIPTokenizer.fromPretrained(join(dir, 'tokenizer')),
        CLIPTokenizer.fromPretrained(join(dir, 'tokenizer_2')),
        readJson(join(dir, 'scheduler', 'scheduler_config.json')),
      ]);
    const force = index.force_zeros_for_empty_prompt;
    return new StableDiffusionXLPipeline({
      unet,
      vae,
      textEncoder,
      textEncoder2,
      tokenizer,
      tokenizer2,
      schedulerConfig,
      forceZerosForEmptyPrompt: force === undefined ? true : force === true,
    });
  }

  get defaultSize(): [number, number] {
    return defaultSize(this.components.unet, this.components.vae);
  }

  /** encode_prompt: both encoders' penultimate hidden states side by side, and encoder 2's pooled embeds. */
  async encodePrompt(prompts: string[]): Promise<{ promptEmbeds: Tensor; pooled: Tensor }> {
    const c = this.components;
    const ids1 = prompts.map((p) => c.tokenizer.encode(p, { maxLength: 77 }));
    const ids2 = prompts.map((p) => c.tokenizer2.encode(p, { maxLength: 77 }));
    const [o1, o2] = [await c.textEncoder.forward(ids1), await c.textEncoder2.forward(ids2)];
    const a = o1.penultimateHiddenState;
    const b = o2.penultimateHiddenState;
    const [n, l, d1] = a.shape as [number, number, number];
    const d2 = b.shape[2]!;
    const out = new Float32Array(n * l * (d1 + d2));
    for (let r = 0; r < n * l; r++) {
      out.set(a.data.subarray(r * d1, (r + 1) * d1), r * (d1 + d2));
      out.set(b.data.subarray(r * d2, (r + 1) * d2), r * (d1 + d2) + d1);
    }
    return { promptEmbeds: { data: out, shape: [n, l, d1 + d2] }, pooled: o2.textEmbeds };
  }

  /** The UNet conditioning for a run (CFG-concatenated when guidance is on). */
  async conditioning(
    o: GenerateOptions,
    height: number,
    width: number,
    cfg: boolean,
  ): Promise<{ cond: Conditioning; images: number }> {
    const perPrompt = positiveInt('numImagesPerPrompt', o.numImagesPerPrompt, 1);
    let pos: { promptEmbeds: Tensor; pooled: Tensor };
    let neg: { promptEmbeds: Tensor; pooled: Tensor } | undefined;
    if (o.promptEmbeds) {
      if (!o.pooledPromptEmbeds) throw new Error('pooledPromptEmbeds: required with promptEmbeds for SDXL');
      pos = { promptEmbeds: o.promptEmbeds, pooled: o.pooledPromptEmbeds };
      if (o.negativePromptEmbeds && o.negativePooledPromptEmbeds) {
        neg = { promptEmbeds: o.negativePromptEmbeds, pooled: o.negativePooledPromptEmbeds };
      }
    } else {
      pos = await this.encodePrompt(asList('prompt', o.prompt)!);
    }
    const n = pos.promptEmbeds.shape[0]!;
    if (cfg && !neg) {
      const negatives = asList('negativePrompt', o.negativePrompt, n);
      if (!negatives && this.components.forceZerosForEmptyPrompt) {
        neg = { promptEmbeds: zerosLike(pos.promptEmbeds), pooled: zerosLike(pos.pooled) };
      } else {
        neg = await this.encodePrompt(negatives ?? new Array(n).fill(''));
      }
    }
    const orig = o.originalSize ?? [height, width];
    const crop = o.cropsCoordsTopLeft ?? [0, 0];
    const target = o.targetSize ?? [height, width];
    const ids = [...orig, ...crop, ...target];
    const images = n * perPrompt;
    const timeIds: Tensor = {
      data: new Float32Array(images * 6).map((_, i) => ids[i % 6]!),
      shape: [images, 6],
    };
    const p = { embeds: repeatEach(pos.promptEmbeds, perPrompt), pooled: repeatEach(pos.pooled, perPrompt) };
    if (!cfg || !neg)
      return { cond: { encoderHiddenStates: p.embeds, textEmbeds: p.pooled, timeIds }, images };
    const q = { embeds: repeatEach(neg.promptEmbeds, perPrompt), pooled: repeatEach(neg.pooled, perPrompt) };
    return {
      cond: {
        encoderHiddenStates: concatBatch(q.embeds, p.embeds),
        textEmbeds: concatBatch(q.pooled, p.pooled),
        timeIds: concatBatch(timeIds, timeIds),
      },
      images,
    };
  }

  async generate(options: GenerateOptions, runners?: ModelRunners): Promise<GenerateResult> {
    const c = this.components;
    const parts = {
      unet: c.unet,
      vae: c.vae,
      schedulerConfig: c.schedulerConfig,
      defaultGuidance: 5,
      conditioning: (o: GenerateOptions, h: number, w: number, cfg: boolean) =>
        this.conditioning(o, h, w, cfg),
    };
    return textToImage(parts, options, runners);
  }

  async dispose(): Promise<void> {
    const c = this.components;
    await Promise.all([c.unet.dispose(), c.vae.dispose(), c.textEncoder.dispose(), c.textEncoder2.dispose()]);
  }
}
