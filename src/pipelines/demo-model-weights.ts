// Seeded random weights for the demo model. The key list and shapes come from the model code itself: each
// component's graph is built against a store that records every weight it asks for, so the files always
// hold exactly the keys the strict loaders expect.
import type { JsonObject } from '../io/diffusers-folder.js';
import { numel, type Tensor } from '../io/tensor.js';
import { type WeightEntry, WeightStore } from '../io/weights.js';
import { buildVaeDecoderGraph, buildVaeEncoderGraph, parseVaeConfig } from '../models/autoencoder-kl.js';
import { parseCLIPTextConfig } from '../models/clip-text-config.js';
import { buildCLIPTextGraph } from '../models/clip-text-graph.js';
import { buildUNetGraph } from '../models/unet-2d-condition.js';
import { parseUNetConfig } from '../models/unet-config.js';
import { Generator } from '../schedulers/random.js';

export type DemoComponent = 'unet' | 'vae' | 'text_encoder' | 'text_encoder_2';

/** A weight store that has every key: it records what the graph builder looks up, with the shape asked for. */
class RecordingStore extends WeightStore {
  readonly shapes = new Map<string, number[]>();

  constructor(source: string) {
    super(source, new Map());
  }

  override get(key: string, expectedShape: readonly number[]): WeightEntry {
    const prev = this.shapes.get(key);
    if (prev && prev.join() !== expectedShape.join()) {
      throw new Error(`${this.source}: '${key}' is asked for as [${prev}] and as [${expectedShape}]`);
    }
    this.shapes.set(key, [...expectedShape]);
    return {
      key,
      dtype: 'F32',
      shape: [...expectedShape],
      file: this.source,
      offset: 0,
      byteLength: 4 * numel(expectedShape),
    };
  }
}

/** Every weight key of a component and its shape, as the loader for `config` will demand them. */
export function weightShapes(component: DemoComponent, config: JsonObject): Map<string, number[]> {
  const file = `${component}/config.json`;
  const store = new RecordingStore(component);
  switch (component) {
    case 'unet': {
      const c = parseUNetConfig(config, file);
      const minimal = 2 ** (c.downBlockTypes.length - 1);
      buildUNetGraph(c, store, { batch: 1, height: minimal, width: minimal });
      break;
    }
    case 'vae': {
      const c = parseVaeConfig(config, file);
      const f = 2 ** (c.blockOutChannels.length - 1);
      buildVaeDecoderGraph(c, store, { batch: 1, height: 1, width: 1 });
      buildVaeEncoderGraph(c, store, { batch: 1, height: f, width: f });
      break;
    }
    case 'text_encoder':
    case 'text_encoder_2': {
      const c = parseCLIPTextConfig(config, file);
      buildCLIPTextGraph(c, store, 1, c.maxPositionEmbeddings, component === 'text_encoder_2');
      break;
    }
  }
  return store.shapes;
}

/** FNV-1a (32-bit) of a string's UTF-16 units: a stable per-tensor seed, independent of lookup order. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/**
 * n values uniform in [-a, a) with a = std·√3 (so the standard deviation is `std`), as torch's default
 * layer init draws them. Uniforms need only integer arithmetic, so they are bit-identical everywhere and
 * several times faster than normals (the embeddings alone are 3.2 M values).
 */
function uniform(g: Generator, n: number, std: number): Float32Array {
  const a = std * Math.sqrt(3);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (2 * g.uniformFloat() - 1) * a;
  return out;
}

/**
 * The initial value of one weight (every draw has mean 0):
 * - norm weights 1 and norm biases 0 (a 1-d `weight` marks a GroupNorm / LayerNorm);
 * - other biases small (std 0.02), so they are not all zero;
 * - linear and conv weights with variance 1/fan_in, which keeps activations at unit scale through the stack;
 * - CLIP token embeddings with std 1, position embeddings smaller, so the prompt dominates the conditioning.
 */
function initialValues(
  key: string,
  shape: number[],
  shapes: ReadonlyMap<string, number[]>,
  seed: number,
): Float32Array {
  const n = numel(shape);
  const module = key.slice(0, key.lastIndexOf('.'));
  if (shape.length === 1 && shapes.get(`${module}.weight`)?.length === 1) {
    return new Float32Array(n).fill(key.endsWith('.weight') ? 1 : 0);
  }
  const g = new Generator(seed);
  if (shape.length === 1) return uniform(g, n, 0.02);
  if (key.endsWith('token_embedding.weight')) return uniform(g, n, 1);
  if (key.endsWith('position_embedding.weight')) return uniform(g, n, 0.1);
  const fanIn = n / shape[0]!;
  return uniform(g, n, 1 / Math.sqrt(fanIn));
}

/** All weights of one component, keyed by checkpoint name. */
export function demoWeights(
  component: DemoComponent,
  config: JsonObject,
  baseSeed: number,
): Record<string, Tensor> {
  const shapes = weightShapes(component, config);
  const out: Record<string, Tensor> = {};
  for (const [key, shape] of shapes) {
    const seed = fnv1a(`${baseSeed}/${component}/${key}`);
    out[key] = { data: initialValues(key, shape, shapes, seed), shape };
  }
  return out;
}
