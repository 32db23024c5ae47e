// CLIPTextModel and CLIPTextModelWithProjection with transformers 4.36 numerics, emitted as ONNX graphs.
// Module scopes mirror transformers' module tree, so every parameter is looked up by its checkpoint key.
import { GraphCache, toTensor } from '../graph/graph-cache.js';
import type { HostTensor } from '../graph/runner.js';
import { type EngineOptions, executionProviders } from '../graph/session.js';
import { loadComponent } from '../io/diffusers-folder.js';
import type { Int64Tensor, Tensor } from '../io/tensor.js';
import type { WeightStore } from '../io/weights.js';
import { type CLIPHiddenAct, type CLIPTextConfig, parseCLIPTextConfig } from './clip-text-config.js';
import { buildCLIPTextGraph } from './clip-text-graph.js';

/** One sequence, a batch of equally long sequences, or an int64 [B, L] tensor. */
export type TokenIds = number[] | number[][] | Int64Tensor;

export interface CLIPTextModelOptions {
  /** Intra-op threads per session (default: every core). */
  threads?: number;
  /** `cpu` (default), `cuda`, `cuda:N` or `webgpu`. */
  device?: string;
  /** Weight variant, e.g. 'fp16' for `model.fp16.safetensors`. */
  variant?: string;
}

export interface CLIPTextOutput {
  /** [B, L, H], after final_layer_norm. */
  lastHiddenState: Tensor;
  /** hidden_states[-2], [B, L, H]: the input of the last layer, not final-layer-normed (what SDXL uses). */
  penultimateHiddenState: Tensor;
  /** [B, H]: lastHiddenState at the pooled position of each sequence. */
  poolerOutput: Tensor;
  /** [num_hidden_layers + 1, B, L, H]; [0] is the embeddings output. */
  hiddenStates: Tensor;
}

export interface CLIPTextWithProjectionOutput extends CLIPTextOutput {
  /** [B, projection_dim] = text_projection(poolerOutput) (no bias): SDXL's pooled_prompt_embeds. */
  textEmbeds: Tensor;
}

export type { CLIPHiddenAct, CLIPTextConfig };

/**
 * The position each sequence is pooled at, as transformers 4.36 picks it: with eos_token_id 2 (the legacy
 * configs of every real SD/SDXL checkpoint) the first position holding the largest id (argmax), otherwise
 * the first position equal to eos_token_id (0 when there is none, as argmax over all-false gives).
 */
export function pooledPositions(
  ids: BigInt64Array,
  batch: number,
  length: number,
  eosTokenId: number,
): number[] {
  const eos = BigInt(eosTokenId);
  const out: number[] = [];
  for (let b = 0; b < batch; b++) {
    const row = ids.subarray(b * length, (b + 1) * length);
    let at = 0;
    if (eosTokenId === 2) {
      for (let i = 1; i < length; i++) if (row[i]! > row[at]!) at = i;
    } else {
      const i = row.indexOf(eos);
      at = Math.max(i, 0); // no eos: argmax over all-false is 0
    }
    out.push(at);
  }
  return out;
}

/** Token ids as an int64 [B, L] tensor, checked against the config (length and vocabulary). */
export function normaliseTokenIds(ids: TokenIds, config: CLIPTextConfig, what: string): Int64Tensor {
  let data: BigInt64Array;
  let shape: [number, number];
  if (Array.isArray(ids)) {
    const rows = ids.length > 0 && Array.isArray(ids[0]) ? (ids as number[][]) : [ids as number[]];
    const length = rows[0]?.length ?? 0;
    data = new BigInt64Array(rows.length * length);
    rows.forEach((row, b) => {
      if (!Array.isArray(row) || row.length !== length) {
        throw new Error(
          `${what}: input_ids row ${b} has ${Array.isArray(row) ? row.length : 'no'} tokens, row 0 has ${length}; every sequence of a batch must be equally long`,
        );
      }
      row.forEach((v, i) => {
        if (!Number.isSafeInteger(v))
          throw new Error(`${what}: input_ids[${b}][${i}] = ${v} is not an integer token id`);
        data[b * length + i] = BigInt(v);
      });
    });
    shape = [rows.length, length];
  } else {
    const s = ids.shape;
    if (s.length !== 2 || !(ids.data instanceof BigInt64Array) || ids.data.length !== s[0]! * s[1]!) {
      throw new Error(
        `${what}: input_ids tensor must be int64 [B, L] with B·L values, found shape [${s.join(', ')}] holding ${ids.data.length} values`,
      );
    }
    data = ids.data;
    shape = [s[0]!, s[1]!];
  }
  const [batch, length] = shape;
  if (batch === 0 || length === 0)
    throw new Error(`${what}: input_ids is empty (shape [${shape.join(', ')}])`);
  if (length > config.maxPositionEmbeddings) {
    throw new Error(
      `${what}: input_ids has ${length} tokens, but "max_position_embeddings" in ${config.source} is ${config.maxPositionEmbeddings}; truncate the prompt`,
    );
  }
  const vocab = BigInt(config.vocabSize);
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (v < 0n || v >= vocab) {
      throw new Error(
        `${what}: token id ${v} at input_ids[${Math.floor(i / length)}][${i % length}] is out of range; expected 0 <= id < "vocab_size" ${config.vocabSize} (${config.source})`,
      );
    }
  }
  return { data, shape };
}

/** What both classes share: config, weight index, compiled sessions per (batch, length). */
class CLIPTextEncoder {
  private readonly cache: GraphCache;

  constructor(
    readonly config: CLIPTextConfig,
    private readonly weights: WeightStore,
    engine: EngineOptions,
    readonly withProjection: boolean,
    readonly what: string,
  ) {
    this.cache = new GraphCache(engine);
  }

  static async load(
    dir: string,
    opts: CLIPTextModelOptions,
    withProjection: boolean,
    cls: string,
  ): Promise<CLIPTextEncoder> {
    executionProviders(opts.device); // an unknown or missing device fails here, not at the first forward
    const component = await loadComponent(dir, { variant: opts.variant });
    const config = parseCLIPTextConfig(component.config, component.configPath);
    // Check every weight key and shape now, not at the first forward: building is cheap (no bytes are read).
    buildCLIPTextGraph(config, component.weights, 1, config.maxPositionEmbeddings, withProjection);
    component.weights.assertAllUsed(`${cls} (${component.configPath})`);
    return new CLIPTextEncoder(
      config,
      component.weights,
      { threads: opts.threads, device: opts.device },
      withProjection,
      `${cls} (${dir})`,
    );
  }

  async run(ids: TokenIds): Promise<Record<string, HostTensor>> {
    const input = normaliseTokenIds(ids, this.config, this.what);
    const [batch, length] = input.shape as [number, number];
    const pooled = pooledPositions(input.data, batch, length, this.config.eosTokenId);
    const graph = await this.cache.get(`${batch}x${length}`, () =>
      buildCLIPTextGraph(this.config, this.weights, batch, length, this.withProjection),
    );
    return graph.run({
      input_ids: input,
      // Flat row indices into last_hidden_state viewed as [B·L, H].
      pooled_index: { data: BigInt64Array.from(pooled, (p, b) => BigInt(b * length + p)), shape: [batch] },
    });
  }

  outputs(out: Record<string, HostTensor>): CLIPTextOutput {
    return {
      lastHiddenState: toTensor(out.last_hidden_state, `${this.what} last_hidden_state`),
      penultimateHiddenState: toTensor(out.penultimate_hidden_state, `${this.what} penultimate_hidden_state`),
      poolerOutput: toTensor(out.pooler_output, `${this.what} pooler_output`),
      hiddenStates: toTensor(out.hidden_states, `${this.what} hidden_states`),
    };
  }

  /** Number of compiled (batch, length) graphs. */
  get compiledGraphs(): number {
    return this.cache.size;
  }

  dispose(): Promise<void> {
    return this.cache.dispose();
  }
}

/** transformers' CLIPTextModel: SD1.x/2.x's text encoder and SDXL's first one. */
export class CLIPTextModel {
  private constructor(private readonly encoder: CLIPTextEncoder) {}

  static async fromPretrained(dir: string, opts: CLIPTextModelOptions = {}): Promise<CLIPTextModel> {
    return new CLIPTextModel(await CLIPTextEncoder.load(dir, opts, false, 'CLIPTextModel'));
  }

  get config(): CLIPTextConfig {
    return this.encoder.config;
  }

  get compiledGraphs(): number {
    return this.encoder.compiledGraphs;
  }

  async forward(inputIds: TokenIds): Promise<CLIPTextOutput> {
    return this.encoder.outputs(await this.encoder.run(inputIds));
  }

  dispose(): Promise<void> {
    return this.encoder.dispose();
  }
}

/** transformers' CLIPTextModelWithProjection: SDXL's second text encoder. */
export class CLIPTextModelWithProjection {
  private constructor(private readonly encoder: CLIPTextEncoder) {}

  static async fromPretrained(
    dir: string,
    opts: CLIPTextModelOptions = {},
  ): Promise<CLIPTextModelWithProjection> {
    return new CLIPTextModelWithProjection(
      await CLIPTextEncoder.load(dir, opts, true, 'CLIPTextModelWithProjection'),
    );
  }

  get config(): CLIPTextConfig {
    return this.encoder.config;
  }

  get compiledGraphs(): number {
    return this.encoder.compiledGraphs;
  }

  async forward(inputIds: TokenIds): Promise<CLIPTextWithProjectionOutput> {
    const out = await this.encoder.run(inputIds);
    return {
      ...this.encoder.outputs(out),
      textEmbeds: toTensor(out.text_embeds, `${this.encoder.what} text_embeds`),
    };
  }

  dispose(): Promise<void> {
    return this.encoder.dispose();
  }
}
