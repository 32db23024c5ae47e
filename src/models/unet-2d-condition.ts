// diffusers unet_2d_condition.py: UNet2DConditionModel for SD 1.x / 2.x / SDXL, emitted as a graph.
import { GraphBuilder, type SymTensor } from '../graph/builder.js';
import * as F from '../graph/functional.js';
import { GraphCache, toTensor } from '../graph/graph-cache.js';
import type { ExchangeHooks } from '../graph/hooks.js';
import type { HostTensor } from '../graph/runner.js';
import type { EngineOptions } from '../graph/session.js';
import { loadComponent } from '../io/diffusers-folder.js';
import { formatShape, type Int64Tensor, type Tensor } from '../io/tensor.js';
import type { WeightStore } from '../io/weights.js';
import { timestepEmbedding, timesteps } from './embeddings.js';
import { conv2d, groupNorm } from './layers.js';
import { type BlockContext, downBlock, midBlock, upBlock } from './unet-blocks.js';
import { parseUNetConfig, type UNetConfig } from './unet-config.js';

export interface UNetForwardInputs {
  /** [B, in_channels, h, w] latents. */
  sample: Tensor;
  /** One timestep for the batch, or one per batch entry (float or int64). */
  timestep: number | number[] | Tensor | Int64Tensor;
  /** [B, 77, cross_attention_dim] text embeddings. */
  encoderHiddenStates: Tensor;
  /** SDXL: pooled text embeddings [B, D]. */
  textEmbeds?: Tensor;
  /** SDXL: [B, 6] original size, crop top-left, target size. */
  timeIds?: Tensor;
}

export interface UNetGraphSpec {
  batch: number;
  height: number;
  width: number;
  contextLength?: number;
  hooks?: ExchangeHooks;
  /** Also output `intermediate.<module>` tensors at module boundaries (for checks against references). */
  intermediates?: boolean;
  name?: string;
}

export interface ModelOptions extends EngineOptions {
  /** Weight variant, e.g. 'fp16'. */
  variant?: string;
  /** Weights indexed already (an aligned shared copy); only config.json is read from the folder. */
  weightStore?: WeightStore;
}

/** Emits the UNet graph. Inputs: sample, timestep [B], encoder_hidden_states (+ text_embeds, time_ids). */
export function buildUNetGraph(config: UNetConfig, weights: WeightStore, spec: UNetGraphSpec): GraphBuilder {
  const b = new GraphBuilder(spec.name ?? 'unet', { weights, ...(spec.hooks ? { hooks: spec.hooks } : {}) });
  const c = config;
  const { batch, height, width } = spec;
  const sample = b.input('sample', 'float32', [batch, c.inChannels, height, width]);
  const t = b.input('timestep', 'float32', [batch]);
  // The text conditioning is the same at every step: what depends only on it runs once (graph prologue).
  const contextShape = [batch, spec.contextLength ?? 77, c.crossAttentionDim];
  const context = b.input('encoder_hidden_states', 'float32', contextShape, { invariant: true });
  const mark = (name: string, x: SymTensor): void => {
    if (spec.intermediates) b.output(`intermediate.${name}`, x);
  };

  const c0 = c.blockOutChannels[0]!;
  const tembChannels = c0 * 4;
  const tProj = timesteps(t, { channels: c0, flipSinToCos: c.flipSinToCos, freqShift: c.freqShift });
  mark('time_proj', tProj);
  let temb = timestepEmbedding(b, 'time_embedding', tProj, tembChannels);
  mark('time_embedding', temb);
  if (c.additionEmbed) {
    const a = c.additionEmbed;
    const textEmbeds = b.input('text_embeds', 'float32', [batch, a.inputDim - 6 * a.timeEmbedDim], {
      invariant: true,
    });
    const timeIds = b.input('time_ids', 'float32', [batch, 6], { invariant: true });
    const idsProj = timesteps(F.reshape(timeIds, [batch * 6]), {
      channels: a.timeEmbedDim,
      flipSinToCos: c.flipSinToCos,
      freqShift: c.freqShift,
    });
    mark('add_time_proj', idsProj);
    const added = F.concat([textEmbeds, F.reshape(idsProj, [batch, 6 * a.timeEmbedDim])], 1);
    const aug = timestepEmbedding(b, 'add_embedding', added, tembChannels);
    mark('add_embedding', aug);
    temb = F.add(temb, aug);
  }

  let h = conv2d(b, 'conv_in', sample, { inChannels: c.inChannels, outChannels: c0, kernel: 3, padding: 1 });
  mark('conv_in', h);
  const ctx: BlockContext = {
    temb,
    context,
    groups: c.normNumGroups,
    eps: c.normEps,
    tembChannels,
    linearProjection: c.linearProjection,
  };
  const n = c.downBlockTypes.length;
  const skips: SymTensor[] = [h];
  b.scope('down_blocks', () => {
    for (let i = 0; i < n; i++) {
      const r = b.scope(i, () =>
        downBlock(
          b,
          h,
          {
            type: c.downBlockTypes[i]!,
            inChannels: i === 0 ? c0 : c.blockOutChannels[i - 1]!,
            outChannels: c.blockOutChannels[i]!,
            layers: c.layersPerBlock[i]!,
            transformerLayers: c.transformerLayersPerBlock[i]!,
            heads: c.heads[i]!,
            addDownsample: i < n - 1,
            downsamplePadding: c.downsamplePadding,
          },
          ctx,
        ),
      );
      h = r.out;
      skips.push(...r.skips);
      mark(`down_blocks.${i}`, h);
    }
  });

  const last = c.blockOutChannels[n - 1]!;
  h = b.scope('mid_block', () =>
    midBlock(
      b,
      h,
      { channels: last, heads: c.heads[n - 1]!, transformerLayers: c.transformerLayersPerBlock[n - 1]! },
      ctx,
    ),
  );
  mark('mid_block', h);

  b.scope('up_blocks', () => {
    let prev = last;
    for (let i = 0; i < n; i++) {
      const r = n - 1 - i; // the mirrored down block
      const layers = c.layersPerBlock[r]! + 1;
      const blockSkips = skips.splice(skips.length - layers, layers);
      // When the latent is not a multiple of 2^downsamplings, upsample to the next skip's exact size.
      const next = skips[skips.length - 1];
      const size = next && i < n - 1 ? ([next.dim(2), next.dim(3)] as const) : undefined;
      h = b.scope(i, () =>
        upBlock(
          b,
          h,
          blockSkips,
          {
            type: c.upBlockTypes[i]!,
            inChannels: c.blockOutChannels[Math.max(r - 1, 0)]!,
            prevOutputChannels: prev,
            outChannels: c.blockOutChannels[r]!,
            layers,
            transformerLayers: c.transformerLayersPerBlock[r]!,
            heads: c.heads[r]!,
            addUpsample: i < n - 1,
          },
          ctx,
          size,
        ),
      );
      prev = c.blockOutChannels[r]!;
      mark(`up_blocks.${i}`, h);
    }
  });

  h = groupNorm(b, 'conv_norm_out', h, c.normNumGroups, c.normEps);
  mark('conv_norm_out', h);
  h = conv2d(b, 'conv_out', F.silu(h), { inChannels: c0, outChannels: c.outChannels, kernel: 3, padding: 1 });
  mark('conv_out', h);
  b.output('out_sample', h);
  return b;
}

/** Timesteps as the [B] float32 vector the graph takes (a scalar broadcasts, as diffusers expands it). */
export function timestepVector(t: UNetForwardInputs['timestep'], batch: number): Float32Array {
  let values: number[];
  if (typeof t === 'number') values = [t];
  else if (Array.isArray(t)) values = t;
  else values = Array.from(t.data as ArrayLike<number | bigint>, (v) => Number(v));
  if (values.length === 1) return new Float32Array(batch).fill(values[0]!);
  if (values.length !== batch) {
    throw new Error(`UNet timestep: expected 1 or ${batch} values (the batch size), got ${values.length}`);
  }
  return Float32Array.from(values);
}

export class UNet2DConditionModel {
  private readonly cache: GraphCache;

  private constructor(
    readonly config: UNetConfig,
    readonly weights: WeightStore,
    readonly source: string,
    engine: EngineOptions,
  ) {
    this.cache = new GraphCache(engine);
  }

  static async fromPretrained(dir: string, options: ModelOptions = {}): Promise<UNet2DConditionModel> {
    const { variant, weightStore: given, ...engine } = options;
    const comp = await loadComponent(dir, {
      ...(variant ? { variant } : {}),
      ...(given ? { weights: given } : {}),
    });
    const config = parseUNetConfig(comp.config, comp.configPath);
    // Build a minimal graph once: every weight is looked up and shape-checked, and unused keys reported.
    const minimal = 2 ** (config.downBlockTypes.length - 1);
    buildUNetGraph(config, comp.weights, { batch: 1, height: minimal, width: minimal });
    comp.weights.assertAllUsed('UNet2DConditionModel');
    return new UNet2DConditionModel(config, comp.weights, dir, engine);
  }

  /** Input feeds for the graph from user-facing inputs, with shapes checked against the config. */
  feeds(inputs: UNetForwardInputs): Record<string, HostTensor> {
    const c = this.config;
    const s = inputs.sample;
    if (s.shape.length !== 4 || s.shape[1] !== c.inChannels) {
      throw new Error(`UNet sample: expected [B, ${c.inChannels}, h, w], got ${formatShape(s.shape)}`);
    }
    const batch = s.shape[0]!;
    const ehs = inputs.encoderHiddenStates;
    if (ehs.shape.length !== 3 || ehs.shape[0] !== batch || ehs.shape[2] !== c.crossAttentionDim) {
      throw new Error(
        `UNet encoderHiddenStates: expected [${batch}, L, ${c.crossAttentionDim}], got ${formatShape(ehs.shape)}`,
      );
    }
    const feeds: Record<string, HostTensor> = {
      sample: s,
      timestep: { data: timestepVector(inputs.timestep, batch), shape: [batch] },
      encoder_hidden_states: ehs,
    };
    if (c.additionEmbed) {
      const a = c.additionEmbed;
      const textDim = a.inputDim - 6 * a.timeEmbedDim;
      const te = inputs.textEmbeds;
      const ids = inputs.timeIds;
      if (!te || !ids)
        throw new Error(
          'UNet: this SDXL-style UNet (addition_embed_type text_time) needs textEmbeds and timeIds',
        );
      if (te.shape.join() !== [batch, textDim].join()) {
        throw new Error(`UNet textEmbeds: expected [${batch}, ${textDim}], got ${formatShape(te.shape)}`);
      }
      if (ids.shape.join() !== [batch, 6].join()) {
        throw new Error(`UNet timeIds: expected [${batch}, 6], got ${formatShape(ids.shape)}`);
      }
      feeds.text_embeds = te;
      feeds.time_ids = ids;
    }
    return feeds;
  }

  /** Emits the graph for a batch and latent size, optionally with exchange hooks (DistriFusion). */
  buildGraph(spec: UNetGraphSpec): GraphBuilder {
    return buildUNetGraph(this.config, this.weights, spec);
  }

  async forward(
    inputs: UNetForwardInputs,
    options: { intermediates?: boolean } = {},
  ): Promise<Tensor & { intermediates?: Record<string, Tensor> }> {
    const feeds = this.feeds(inputs);
    const [batch, , height, width] = inputs.sample.shape as [number, number, number, number];
    const contextLength = inputs.encoderHiddenStates.shape[1]!;
    const key = `${batch}x${height}x${width}x${contextLength}${options.intermediates ? ':all' : ''}`;
    const graph = await this.cache.get(key, () =>
      this.buildGraph({ batch, height, width, contextLength, intermediates: options.intermediates ?? false }),
    );
    const out = await graph.run(feeds);
    const result: Tensor & { intermediates?: Record<string, Tensor> } = toTensor(
      out.out_sample,
      'UNet output',
    );
    if (options.intermediates) {
      result.intermediates = {};
      for (const [k, v] of Object.entries(out)) {
        if (k.startsWith('intermediate.'))
          result.intermediates[k.slice('intermediate.'.length)] = toTensor(v, k);
      }
    }
    return result;
  }

  async dispose(): Promise<void> {
    await this.cache.dispose();
  }
}
