// The CLIP text encoder config (transformers' CLIPTextConfig, 4.36), parsed strictly from config.json.
import { join } from 'node:path';
import { type JsonObject, readJson } from '../io/diffusers-folder.js';
import { ConfigReader } from './config.js';

/**
 * Activations CLIPTextConfig.hidden_act can name that we implement: `gelu` is the exact (erf) GELU;
 * `gelu_new` and `gelu_pytorch_tanh` are both the tanh approximation.
 */
export const CLIP_HIDDEN_ACTS = ['quick_gelu', 'gelu', 'gelu_new', 'gelu_pytorch_tanh'] as const;
export type CLIPHiddenAct = (typeof CLIP_HIDDEN_ACTS)[number];

export interface CLIPTextConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  /** Output size of `text_projection` (used only by CLIPTextModelWithProjection). */
  projectionDim: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  maxPositionEmbeddings: number;
  hiddenAct: CLIPHiddenAct;
  layerNormEps: number;
  padTokenId: number;
  bosTokenId: number;
  /** 2 (every real SD/SDXL config) selects the legacy argmax pooling; see pooledPositions. */
  eosTokenId: number;
  /** File the config came from, for error messages. */
  source: string;
  /** Keys present in the file that nothing reads. */
  ignoredKeys: string[];
}

/**
 * Parses a CLIPTextConfig JSON object. Missing keys take transformers' defaults (as `from_pretrained`
 * does); present keys are type-checked and unsupported values are rejected naming the file and key.
 */
export function parseCLIPTextConfig(json: JsonObject, file: string): CLIPTextConfig {
  const r = new ConfigReader(file, json);
  // A full CLIPModel config nests the text part under text_config: not a text encoder folder.
  r.expect('model_type', 'clip_text_model');
  // Dropout and init settings do not affect inference; read them so they are type-checked, not "ignored".
  r.number('attention_dropout', 0);
  r.number('dropout', 0);
  r.number('initializer_range', 0.02);
  r.number('initializer_factor', 1);
  const cfg: CLIPTextConfig = {
    vocabSize: positive(r, 'vocab_size', 49408),
    hiddenSize: positive(r, 'hidden_size', 512),
    intermediateSize: positive(r, 'intermediate_size', 2048),
    projectionDim: positive(r, 'projection_dim', 512),
    numHiddenLayers: positive(r, 'num_hidden_layers', 12),
    numAttentionHeads: positive(r, 'num_attention_heads', 8),
    maxPositionEmbeddings: positive(r, 'max_position_embeddings', 77),
    hiddenAct: r.string('hidden_act', CLIP_HIDDEN_ACTS, 'quick_gelu'),
    layerNormEps: r.number('layer_norm_eps', 1e-5),
    padTokenId: r.int('pad_token_id', 1),
    bosTokenId: r.int('bos_token_id', 49406),
    eosTokenId: r.int('eos_token_id', 49407),
    source: file,
    ignoredKeys: [],
  };
  if (cfg.hiddenSize % cfg.numAttentionHeads !== 0) {
    throw new Error(
      `${file}: "hidden_size" ${cfg.hiddenSize} must be divisible by "num_attention_heads" ${cfg.numAttentionHeads}`,
    );
  }
  if (!(cfg.layerNormEps > 0))
    throw new Error(`${file}: "layer_norm_eps" must be > 0, found ${cfg.layerNormEps}`);
  cfg.ignoredKeys = r.ignoredKeys();
  return cfg;
}

function positive(r: ConfigReader, key: string, fallback: number): number {
  const v = r.int(key, fallback);
  if (v <= 0) throw new Error(`${r.file}: "${key}" must be a positive integer, found ${v}`);
  return v;
}

/** Reads and parses `<dir>/config.json` of a text encoder folder (no weights touched). */
export async function readCLIPTextConfig(dir: string): Promise<CLIPTextConfig> {
  const file = join(dir, 'config.json');
  return parseCLIPTextConfig(await readJson(file), file);
}
