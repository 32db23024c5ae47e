// diffusers autoencoder_kl.py + vae.py: AutoencoderKL's Encoder (to the latent mean / log-variance) and
// Decoder, for the SD / SDXL VAE layout.
import { GraphBuilder, type SymTensor } from '../graph/builder.js';
import * as F from '../graph/functional.js';
import { GraphCache, toTensor } from '../graph/graph-cache.js';
import type { ExchangeHooks } from '../graph/hooks.js';
import { type JsonObject, loadComponent } from '../io/diffusers-folder.js';
import { formatShape, type Tensor } from '../io/tensor.js';
import type { WeightStore } from '../io/weights.js';
import { attention } from './attention.js';
import { ConfigReader } from './config.js';
import { conv2d, fromTokens, groupNorm, toTokens } from './layers.js';
import { downsample, resnetBlock, upsample } from './resnet.js';
import type { ModelOptions } from './unet-2d-condition.js';

export interface VaeConfig {
  inChannels: number;
  outChannels: number;
  latentChannels: number;
  blockOutChannels: number[];
  layersPerBlock: number;
  normNumGroups: number;
  scalingFactor: number;
  forceUpcast: boolean;
  useQuantConv: boolean;
  usePostQuantConv: boolean;
  midBlockAttention: boolean;
  ignoredKeys: string[];
}

export function parseVaeConfig(json: JsonObject, file: string): VaeConfig {
  const r = new ConfigReader(file, json);
  const blockOutChannels = r.intList('block_out_channels');
  const n = blockOutChannels.length;
  const down = r.stringList('down_block_types', ['DownEncoderBlock2D']);
  const up = r.stringList('up_block_types', ['UpDecoderBlock2D']);
  if (down.length !== n || up.length !== n) {
    throw new Error(`${file}: block types must have ${n} entries like block_out_channels`);
  }
  r.string('act_fn', ['silu'], 'silu');
  r.expect('latents_mean', null);
  r.expect('latents_std', null);
  r.ignore('sample_size');
  const c: VaeConfig = {
    inChannels: r.int('in_channels', 3),
    outChannels: r.int('out_channels', 3),
    latentChannels: r.int('latent_channels', 4),
    blockOutChannels,
    layersPerBlock: r.int('layers_per_block', 1),
    normNumGroups: r.int('norm_num_groups', 32),
    // diffusers' default when the config lacks it (the real SD 1.5 VAE config does)
    scalingFactor: r.number('scaling_factor', 0.18215),
    forceUpcast: r.bool('force_upcast', true),
    useQuantConv: r.bool('use_quant_conv', true),
    usePostQuantConv: r.bool('use_post_quant_conv', true),
    midBlockAttention: r.bool('mid_block_add_attention', true),
    ignoredKeys: [],
  };
  c.ignoredKeys = r.ignoredKeys();
  return c;
}

const EPS = 1e-6;

/** UNetMidBlock2D as the VAE uses it: resnet, single-head self-attention with GroupNorm, resnet. */
function vaeMidBlock(b: GraphBuilder, x: SymTensor, c: VaeConfig): SymTensor {
  return b.scope('mid_block', () => {
    const ch = x.dim(1);
    const spec = { inChannels: ch, outChannels: ch, groups: c.normNumGroups, eps: EPS };
    let h = b.scope('resnets', () => b.scope(0, () => resnetBlock(b, x, undefined, spec)));
    if (c.midBlockAttention) {
      h = b.scope('attentions', () =>
        b.scope(0, () => {
          const [, , hh, ww] = h.shape as [number, number, number, number];
          const normed = toTokens(groupNorm(b, 'group_norm', h, c.normNumGroups, EPS));
          const out = attention(b, normed, undefined, { heads: 1, qkvBias: true });
          return F.add(fromTokens(out, hh, ww), h);
        }),
      );
    }
    return b.scope('resnets', () => b.scope(1, () => resnetBlock(b, h, undefined, spec)));
  });
}

function resnets(
  b: GraphBuilder,
  x: SymTensor,
  count: number,
  inCh: number,
  outCh: number,
  c: VaeConfig,
): SymTensor {
  let h = x;
  b.scope('resnets', () => {
    for (let j = 0; j < count; j++) {
      h = b.scope(j, () =>
        resnetBlock(b, h, undefined, {
          inChannels: j === 0 ? inCh : outCh,
          outChannels: outCh,
          groups: c.normNumGroups,
          eps: EPS,
        }),
      );
    }
  });
  return h;
}

/** decoder: [B, latent, h, w] (already divided by scaling_factor) → [B, out, h·f, w·f] in [-1, 1]. */
export function buildVaeDecoderGraph(
  c: VaeConfig,
  weights: WeightStore,
  spec: { batch: number; height: number; width: number; hooks?: ExchangeHooks },
): GraphBuilder {
  const b = new GraphBuilder('vae_decoder', { weights, ...(spec.hooks ? { hooks: spec.hooks } : {}) });
  let z = b.input('latents', 'float32', [spec.batch, c.latentChannels, spec.height, spec.width]);
  if (c.usePostQuantConv) {
    z = conv2d(b, 'post_quant_conv', z, {
      inChannels: c.latentChannels,
      outChannels: c.latentChannels,
      kernel: 1,
    });
  }
  const rev = [...c.blockOutChannels].reverse();
  const out = b.scope('decoder', () => {
    let h = conv2d(b, 'conv_in', z, {
      inChannels: c.latentChannels,
      outChannels: rev[0]!,
      kernel: 3,
      padding: 1,
    });
    h = vaeMidBlock(b, h, c);
    b.scope('up_blocks', () => {
      let prev = rev[0]!;
      rev.forEach((ch, i) => {
        h = b.scope(i, () => {
          const r = resnets(b, h, c.layersPerBlock + 1, prev, ch, c);
          return i < rev.length - 1 ? upsample(b, r, ch) : r;
        });
        prev = ch;
      });
    });
    h = F.silu(groupNorm(b, 'conv_norm_out', h, c.normNumGroups, EPS));
    return conv2d(b, 'conv_out', h, {
      inChannels: rev[rev.length - 1]!,
      outChannels: c.outChannels,
      kernel: 3,
      padding: 1,
    });
  });
  b.output('sample', out);
  return b;
}

/** encoder: [B, in, H, W] in [-1, 1] → latent distribution (mean, logvar clamped to [-30, 20], std). */
export function buildVaeEncoderGraph(
  c: VaeConfig,
  weights: WeightStore,
  spec: { batch: number; height: number; width: number },
): GraphBuilder {
  const b = new GraphBuilder('vae_encoder', { weights });
  const x = b.input('image', 'float32', [spec.batch, c.inChannels, spec.height, spec.width]);
  const n = c.blockOutChannels.length;
  let moments = b.scope('encoder', () => {
    let h = conv2d(b, 'conv_in', x, {
      inChannels: c.inChannels,
      outChannels: c.blockOutChannels[0]!,
      kernel: 3,
      padding: 1,
    });
    b.scope('down_blocks', () => {
      let prev = c.blockOutChannels[0]!;
      c.blockOutChannels.forEach((ch, i) => {
        h = b.scope(i, () => {
          const r = resnets(b, h, c.layersPerBlock, prev, ch, c);
          return i < n - 1 ? downsample(b, r, ch, 0) : r;
        });
        prev = ch;
      });
    });
    h = vaeMidBlock(b, h, c);
    h = F.silu(groupNorm(b, 'conv_norm_out', h, c.normNumGroups, EPS));
    return conv2d(b, 'conv_out', h, {
      inChannels: c.blockOutChannels[n - 1]!,
      outChannels: 2 * c.latentChannels,
      kernel: 3,
      padding: 1,
    });
  });
  if (c.useQuantConv) {
    moments = conv2d(b, 'quant_conv', moments, {
      inChannels: 2 * c.latentChannels,
      outChannels: 2 * c.latentChannels,
      kernel: 1,
    });
  }
  const [mean, rawLogvar] = F.split(moments, [c.latentChannels, c.latentChannels], 1) as [
    SymTensor,
    SymTensor,
  ];
  const logvar = F.clip(rawLogvar, -30, 20);
  b.output('mean', mean);
  b.output('logvar', logvar);
  b.output('std', F.exp(F.mul(logvar, 0.5)));
  return b;
}

export interface LatentDistribution {
  mean: Tensor;
  logvar: Tensor;
  std: Tensor;
}

export class AutoencoderKL {
  private readonly cache: GraphCache;

  private constructor(
    readonly config: VaeConfig,
    readonly weights: WeightStore,
    engine: ModelOptions,
  ) {
    this.cache = new GraphCache(engine);
  }

  static async fromPretrained(dir: string, options: ModelOptions = {}): Promise<AutoencoderKL> {
    const comp = await loadComponent(dir, options.variant ? { variant: options.variant } : {});
    const config = parseVaeConfig(comp.config, comp.configPath);
    const f = 2 ** (config.blockOutChannels.length - 1);
    buildVaeDecoderGraph(config, comp.weights, { batch: 1, height: 1, width: 1 });
    buildVaeEncoderGraph(config, comp.weights, { batch: 1, height: f, width: f });
    comp.weights.assertAllUsed('AutoencoderKL');
    const { variant: _v, weightStore: _w, ...engine } = options;
    return new AutoencoderKL(config, comp.weights, engine);
  }

  /** Pixel size per latent pixel (8 for SD / SDXL). */
  get scaleFactor(): number {
    return 2 ** (this.config.blockOutChannels.length - 1);
  }

  /** Latents (already divided by scaling_factor) → image in [-1, 1]. */
  async decode(latents: Tensor): Promise<Tensor> {
    const [batch, ch, height, width] = latents.shape as [number, number, number, number];
    if (latents.shape.length !== 4 || ch !== this.config.latentChannels) {
      throw new Error(
        `VAE decode: expected latents [B, ${this.config.latentChannels}, h, w], got ${formatShape(latents.shape)}`,
      );
    }
    const g = await this.cache.get(`dec:${batch}x${height}x${width}`, () =>
      buildVaeDecoderGraph(this.config, this.weights, { batch, height, width }),
    );
    return toTensor((await g.run({ latents })).sample, 'VAE decode');
  }

  /** Image in [-1, 1] → the latent distribution. */
  async encodeDistribution(image: Tensor): Promise<LatentDistribution> {
    const [batch, ch, height, width] = image.shape as [number, number, number, number];
    const f = this.scaleFactor;
    if (image.shape.length !== 4 || ch !== this.config.inChannels || height % f !== 0 || width % f !== 0) {
      throw new Error(
        `VAE encode: expected an image [B, ${this.config.inChannels}, H, W] with H and W divisible by ${f}, got ${formatShape(image.shape)}`,
      );
    }
    const g = await this.cache.get(`enc:${batch}x${height}x${width}`, () =>
      buildVaeEncoderGraph(this.config, this.weights, { batch, height, width }),
    );
    const out = await g.run({ image });
    return {
      mean: toTensor(out.mean, 'VAE mean'),
      logvar: toTensor(out.logvar, 'VAE logvar'),
      std: toTensor(out.std, 'VAE std'),
    };
  }

  /** Image in [-1, 1] → the latent mean (what img2img pipelines use with a deterministic encode). */
  async encode(image: Tensor): Promise<Tensor> {
    return (await this.encodeDistribution(image)).mean;
  }

  async dispose(): Promise<void> {
    await this.cache.dispose();
  }
}
