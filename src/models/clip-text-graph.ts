// The graph of transformers' CLIPTextTransformer (4.36) for one (batch, length), plus text_projection.
// Scopes follow the module tree, so `b.param('weight')` under text_model.encoder.layers.0.self_attn.q_proj
// is the checkpoint key text_model.encoder.layers.0.self_attn.q_proj.weight.
import { GraphBuilder, type SymTensor } from '../graph/builder.js';
import * as F from '../graph/functional.js';
import type { WeightStore } from '../io/weights.js';
import type { CLIPHiddenAct, CLIPTextConfig } from './clip-text-config.js';

// transformers fills the causal mask with torch.finfo(float32).min, not -inf.
const FLOAT32_MIN = -3.4028234663852886e38;

/**
 * Graph inputs: `input_ids` int64 [B, L]; `pooled_index` int64 [B], flat row indices b·L + position into
 * last_hidden_state viewed as [B·L, H] (the position is chosen on the host, see pooledPositions).
 * Outputs: last_hidden_state, penultimate_hidden_state, pooler_output, hidden_states, and text_embeds
 * when `withProjection`.
 */
export function buildCLIPTextGraph(
  config: CLIPTextConfig,
  weights: WeightStore,
  batch: number,
  length: number,
  withProjection: boolean,
): GraphBuilder {
  const b = new GraphBuilder(`clip_text_${batch}x${length}`, { weights });
  const ids = b.input('input_ids', 'int64', [batch, length]);
  const pooledIndex = b.input('pooled_index', 'int64', [batch]);
  const h = config.hiddenSize;

  const { states, last } = b.scope('text_model', () => {
    let x = b.scope('embeddings', () => embeddings(b, ids, config));
    const mask = causalMask(b, length);
    const all = [x];
    b.scope('encoder', () =>
      b.scope('layers', () => {
        for (let i = 0; i < config.numHiddenLayers; i++) {
          x = b.scope(i, () => encoderLayer(b, x, mask, config));
          all.push(x);
        }
      }),
    );
    return { states: all, last: layerNorm(b, 'final_layer_norm', x, config) };
  });

  const pooled = F.gather(F.reshape(last, [batch * length, h]), pooledIndex);
  b.output('last_hidden_state', last);
  b.output('penultimate_hidden_state', states[states.length - 2]!);
  b.output('pooler_output', pooled);
  b.output(
    'hidden_states',
    F.concat(
      states.map((s) => F.unsqueeze(s, 0)),
      0,
    ),
  );
  if (withProjection) {
    b.output(
      'text_embeds',
      b.scope('text_projection', () => F.linear(pooled, b.param('weight', [config.projectionDim, h]))),
    );
  }
  return b;
}

/** token_embedding(ids) + position_embedding(arange(L)). */
function embeddings(b: GraphBuilder, ids: SymTensor, config: CLIPTextConfig): SymTensor {
  const h = config.hiddenSize;
  const table = b.scope('token_embedding', () => b.param('weight', [config.vocabSize, h]));
  const positions = b.scope('position_embedding', () => b.param('weight', [config.maxPositionEmbeddings, h]));
  return F.add(F.gather(table, ids), F.slice(positions, 0, 0, ids.dim(1)));
}

/** Additive [1, 1, L, L] mask: 0 on and below the diagonal, float32 min above. */
function causalMask(b: GraphBuilder, length: number): SymTensor {
  const m = new Float32Array(length * length);
  for (let i = 0; i < length; i++) m.fill(FLOAT32_MIN, i * length + i + 1, (i + 1) * length);
  return b.constant(m, [1, 1, length, length], 'causal_mask');
}

/** Pre-norm block: x + attn(ln1(x)), then x + mlp(ln2(x)). */
function encoderLayer(b: GraphBuilder, x: SymTensor, mask: SymTensor, config: CLIPTextConfig): SymTensor {
  const h = config.hiddenSize;
  // layer_norm1/2 are siblings of self_attn/mlp in the module tree, not children.
  let y = layerNorm(b, 'layer_norm1', x, config);
  y = b.scope('self_attn', () => {
    const q = linear(b, 'q_proj', y, h, h);
    const k = linear(b, 'k_proj', y, h, h);
    const v = linear(b, 'v_proj', y, h, h);
    return linear(b, 'out_proj', F.attention(q, k, v, config.numAttentionHeads, { bias: mask }), h, h);
  });
  x = F.add(x, y);
  y = layerNorm(b, 'layer_norm2', x, config);
  const mlp = b.scope('mlp', () => {
    const a = activation(linear(b, 'fc1', y, h, config.intermediateSize), config.hiddenAct);
    return linear(b, 'fc2', a, config.intermediateSize, h);
  });
  return F.add(x, mlp);
}

function linear(b: GraphBuilder, name: string, x: SymTensor, inF: number, outF: number): SymTensor {
  return b.scope(name, () => F.linear(x, b.param('weight', [outF, inF]), b.param('bias', [outF])));
}

function layerNorm(b: GraphBuilder, name: string, x: SymTensor, config: CLIPTextConfig): SymTensor {
  const c = config.hiddenSize;
  return b.scope(name, () =>
    F.layerNorm(x, b.param('weight', [c]), b.param('bias', [c]), config.layerNormEps),
  );
}

function activation(x: SymTensor, act: CLIPHiddenAct): SymTensor {
  switch (act) {
    case 'quick_gelu':
      return F.quickGelu(x);
    case 'gelu':
      return F.gelu(x, 'none');
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
      return F.gelu(x, 'tanh');
  }
}
