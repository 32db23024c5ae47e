// Seeded random UNet inputs of the shapes a pipeline feeds: latents, one timestep per batch entry, text
// embeddings, and SDXL's pooled embeddings and size/crop ids.
import type { HostTensor } from '../graph/runner.js';
import type { UNetConfig } from '../models/unet-config.js';
import { Generator, randn } from '../schedulers/random.js';

export interface UNetInputSpec {
  batch: number;
  /** Image size in pixels (the latent is 8 times smaller). */
  height: number;
  width: number;
  contextLength?: number;
  seed?: number;
}

/** The VAE of SD 1.x / 2.x / SDXL downsamples by 8. */
export const VAE_SCALE = 8;

export function latentSize(height: number, width: number): [number, number] {
  for (const [k, v] of [
    ['height', height],
    ['width', width],
  ] as const) {
    if (!Number.isInteger(v) || v <= 0 || v % VAE_SCALE !== 0) {
      throw new Error(`--${k}: expected a positive multiple of ${VAE_SCALE} pixels, got ${v}`);
    }
  }
  return [height / VAE_SCALE, width / VAE_SCALE];
}

/** Feeds for the UNet graph (input names as buildUNetGraph declares them). */
export function unetFeeds(c: UNetConfig, s: UNetInputSpec, timestep = 500): Record<string, HostTensor> {
  const g = new Generator(s.seed ?? 0);
  const [h, w] = latentSize(s.height, s.width);
  const b = s.batch;
  const ctx = s.contextLength ?? 77;
  const feeds: Record<string, HostTensor> = {
    sample: { data: randn([b, c.inChannels, h, w], g), shape: [b, c.inChannels, h, w] },
    timestep: { data: new Float32Array(b).fill(timestep), shape: [b] },
    encoder_hidden_states: {
      data: randn([b, ctx, c.crossAttentionDim], g),
      shape: [b, ctx, c.crossAttentionDim],
    },
  };
  if (c.additionEmbed) {
    const textDim = c.additionEmbed.inputDim - 6 * c.additionEmbed.timeEmbedDim;
    feeds.text_embeds = { data: randn([b, textDim], g), shape: [b, textDim] };
    const ids = [s.height, s.width, 0, 0, s.height, s.width];
    feeds.time_ids = { data: new Float32Array(b * 6).map((_, i) => ids[i % 6]!), shape: [b, 6] };
  }
  return feeds;
}
