import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  asFloat,
  assertClose,
  fixture,
  loadFixture,
  skipWithoutFixtures,
} from '../../test/helpers/fixtures.js';
import type { AnyTensor, Int64Tensor, Tensor } from '../io/tensor.js';
import { parseCLIPTextConfig, readCLIPTextConfig } from './clip-text-config.js';
import {
  CLIPTextModel,
  type CLIPTextModelOptions,
  CLIPTextModelWithProjection,
  type CLIPTextOutput,
  pooledPositions,
} from './clip-text-model.js';

// The README's bound for float32 text encoders (the reference's own float32-vs-float64 error is ~4e-7).
const TOL = { relL2: 1e-4, maxAbsOverMaxRef: 1e-4 };

const TE1 = (): string => fixture('sdxl-tiny', 'text_encoder');
const TE2 = (): string => fixture('sdxl-tiny', 'text_encoder_2');

function asInt64(t: AnyTensor | undefined, name: string): Int64Tensor {
  if (!t || !(t.data instanceof BigInt64Array))
    throw new Error(`fixture tensor ${name} missing or not int64`);
  return { data: t.data, shape: t.shape };
}

/** Rows [from, to) of axis `axis` of a row-major tensor. */
function sliceAxis(t: Tensor, axis: number, from: number, to: number): Tensor {
  const outer = t.shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = t.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const n = t.shape[axis]!;
  const data = new Float32Array(outer * (to - from) * inner);
  for (let o = 0; o < outer; o++) {
    data.set(t.data.subarray((o * n + from) * inner, (o * n + to) * inner), o * (to - from) * inner);
  }
  const shape = [...t.shape];
  shape[axis] = to - from;
  return { data, shape };
}

/** torch.cat([a, b], -1). */
function catLast(a: Tensor, b: Tensor): Tensor {
  const ca = a.shape.at(-1)!;
  const cb = b.shape.at(-1)!;
  const rows = a.data.length / ca;
  const data = new Float32Array(rows * (ca + cb));
  for (let r = 0; r < rows; r++) {
    data.set(a.data.subarray(r * ca, (r + 1) * ca), r * (ca + cb));
    data.set(b.data.subarray(r * cb, (r + 1) * cb), r * (ca + cb) + ca);
  }
  return { data, shape: [...a.shape.slice(0, -1), ca + cb] };
}

/** A copy of a text encoder folder with an edited config.json and the weights linked, not copied. */
async function editedFolder(src: string, edit: Record<string, unknown>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'clip-text-'));
  const config = JSON.parse(await readFile(join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
  await writeFile(join(dir, 'config.json'), JSON.stringify({ ...config, ...edit }));
  await symlink(join(src, 'model.safetensors'), join(dir, 'model.safetensors'));
  return dir;
}

describe('CLIP text encoders against the transformers 4.36 fixtures (clip-tiny)', {
  skip: skipWithoutFixtures,
}, () => {
  let io: Record<string, AnyTensor>;
  let te1: CLIPTextModel;
  let te2: CLIPTextModelWithProjection;
  let o1: CLIPTextOutput;
  let o2: Awaited<ReturnType<CLIPTextModelWithProjection['forward']>>;
  const opts: CLIPTextModelOptions = { threads: 2 };

  before(async () => {
    io = await loadFixture('clip-tiny', 'io.safetensors');
    te1 = await CLIPTextModel.fromPretrained(TE1(), opts);
    te2 = await CLIPTextModelWithProjection.fromPretrained(TE2(), opts);
    o1 = await te1.forward(asInt64(io['te1.input_ids'], 'te1.input_ids'));
    o2 = await te2.forward(asInt64(io['te2.input_ids'], 'te2.input_ids'));
  });
  after(async () => {
    await te1?.dispose();
    await te2?.dispose();
  });

  test('every stored output matches', (t) => {
    const ours: Record<string, Tensor> = {
      'te1.last_hidden_state': o1.lastHiddenState,
      'te1.pooler_output': o1.poolerOutput,
      'te1.hidden_states': o1.hiddenStates,
      'te1.penultimate_hidden_state': o1.penultimateHiddenState,
      'te2.last_hidden_state': o2.lastHiddenState,
      'te2.pooler_output': o2.poolerOutput,
      'te2.hidden_states': o2.hiddenStates,
      'te2.penultimate_hidden_state': o2.penultimateHiddenState,
      'te2.text_embeds': o2.textEmbeds,
      'sdxl.prompt_embeds': catLast(o1.penultimateHiddenState, o2.penultimateHiddenState),
      'sdxl.pooled_prompt_embeds': o2.textEmbeds,
    };
    const stored = Object.keys(io).filter((k) => !k.endsWith('.input_ids'));
    t.diagnostic(`stored outputs: ${stored.join(', ')}`);
    // Each stored output must be checked: a new fixture tensor without a counterpart here fails.
    const unchecked = stored.filter((k) => !(k in ours));
    assert.deepEqual(unchecked, [], `fixture outputs with no check: ${unchecked.join(', ')}`);
    let checked = 0;
    for (const name of stored) {
      assertClose(t, name, ours[name]!, asFloat(io[name], name), TOL);
      checked += 1;
    }
    assert.ok(checked >= 10, `only ${checked} outputs compared`);
  });

  test('pooling takes the first position of the largest id (eos_token_id 2)', () => {
    const ids = asInt64(io['te1.input_ids'], 'te1.input_ids');
    const pos = pooledPositions(ids.data, 3, 77, 2);
    // Prompt 0 is bos + 10 tokens + eos; the padding after it repeats 49407 (te1) or is 0 (te2).
    assert.equal(pos[0], 11);
    assert.deepEqual(pos, pooledPositions(asInt64(io['te2.input_ids'], 'te2.input_ids').data, 3, 77, 2));
    const h = o1.lastHiddenState;
    for (let b = 0; b < 3; b++) {
      const row = h.data.subarray((b * 77 + pos[b]!) * 32, (b * 77 + pos[b]! + 1) * 32);
      assert.deepEqual(o1.poolerOutput.data.subarray(b * 32, (b + 1) * 32), row);
    }
  });

  test('a prefix of a sequence gives the prefix of its outputs (causal mask, arange positions)', async (t) => {
    const ids = asInt64(io['te2.input_ids'], 'te2.input_ids');
    const row = Array.from(ids.data.subarray(0, 77), Number);
    const len = row.indexOf(49407) + 1;
    const out = await te2.forward(row.slice(0, len));
    assert.deepEqual(out.lastHiddenState.shape, [1, len, 32]);
    const refLast = sliceAxis(sliceAxis(asFloat(io['te2.last_hidden_state']), 0, 0, 1), 1, 0, len);
    assertClose(t, `te2 last_hidden_state[0, :${len}]`, out.lastHiddenState, refLast, TOL);
    const refStates = sliceAxis(sliceAxis(asFloat(io['te2.hidden_states']), 1, 0, 1), 2, 0, len);
    assertClose(t, `te2 hidden_states[:, 0, :${len}]`, out.hiddenStates, refStates, TOL);
    assertClose(
      t,
      'te2 text_embeds[0] (prefix)',
      out.textEmbeds,
      sliceAxis(asFloat(io['te2.text_embeds']), 0, 0, 1),
      TOL,
    );
  });

  test('number[], number[][] and int64 inputs agree; graphs are cached per (batch, length)', async (t) => {
    const ids = asInt64(io['te1.input_ids'], 'te1.input_ids');
    const rows = [0, 1, 2].map((b) => Array.from(ids.data.subarray(b * 77, (b + 1) * 77), Number));
    const before = te1.compiledGraphs;
    const fromRows = await te1.forward(rows);
    assert.equal(te1.compiledGraphs, before, 'same (3, 77) shape must reuse the compiled graph');
    assert.deepEqual(fromRows.lastHiddenState.data, o1.lastHiddenState.data);
    const one = await te1.forward(rows[1]!);
    assert.equal(te1.compiledGraphs, before + 1);
    assert.deepEqual(one.poolerOutput.shape, [1, 32]);
    // A different batch size may block the GEMMs differently: close, not necessarily bit-equal.
    assertClose(
      t,
      'pooler_output, batch 1 vs row 1 of batch 3',
      one.poolerOutput,
      sliceAxis(o1.poolerOutput, 0, 1, 2),
      TOL,
    );
    assert.deepEqual(one.hiddenStates.shape, [4, 1, 77, 32]);
  });

  test('missing weight: CLIPTextModelWithProjection on a folder without text_projection', async () => {
    await assert.rejects(CLIPTextModelWithProjection.fromPretrained(TE1()), (e: Error) => {
      assert.match(e.message, /text_encoder/);
      assert.match(e.message, /missing tensor 'text_projection\.weight'/);
      assert.match(e.message, /expected shape \[32, 32\]/);
      return true;
    });
  });

  test('an unknown device is rejected at load time', async () => {
    await assert.rejects(
      CLIPTextModel.fromPretrained(TE1(), { device: 'tpu' }),
      /device 'tpu': expected 'cpu'/,
    );
  });

  test('unused weight: CLIPTextModel on a folder with text_projection', async () => {
    await assert.rejects(CLIPTextModel.fromPretrained(TE2()), (e: Error) => {
      assert.match(e.message, /text_encoder_2/);
      assert.match(e.message, /1 tensor\(s\) not used by CLIPTextModel/);
      assert.match(e.message, /text_projection\.weight/);
      return true;
    });
  });

  test('wrong shape: hidden_size in config.json contradicts the weights', async () => {
    const dir = await editedFolder(TE1(), { hidden_size: 64 });
    try {
      await assert.rejects(CLIPTextModel.fromPretrained(dir), (e: Error) => {
        assert.match(e.message, /model\.safetensors/);
        assert.match(e.message, /'text_model\.embeddings\.token_embedding\.weight' has shape \[49408, 32\]/);
        assert.match(e.message, /implies \[49408, 64\]/);
        return true;
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('unsupported hidden_act is rejected naming the file, key, value and what is supported', async () => {
    const dir = await editedFolder(TE2(), { hidden_act: 'silu' });
    try {
      await assert.rejects(CLIPTextModelWithProjection.fromPretrained(dir), (e: Error) => {
        assert.ok(e.message.includes(join(dir, 'config.json')), e.message);
        assert.match(
          e.message,
          /unsupported "hidden_act" "silu"; supported: quick_gelu, gelu, gelu_new, gelu_pytorch_tanh/,
        );
        return true;
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('tanh GELU variants run (no fixture: only that they build and differ slightly from erf GELU)', async () => {
    const dir = await editedFolder(TE2(), { hidden_act: 'gelu_new' });
    try {
      const te = await CLIPTextModelWithProjection.fromPretrained(dir, opts);
      const ids = Array.from(asInt64(io['te2.input_ids'], 'te2.input_ids').data.subarray(0, 77), Number);
      const out = await te.forward(ids);
      await te.dispose();
      const ref = sliceAxis(o2.lastHiddenState, 0, 0, 1);
      let maxDiff = 0;
      for (let i = 0; i < ref.data.length; i++)
        maxDiff = Math.max(maxDiff, Math.abs(out.lastHiddenState.data[i]! - ref.data[i]!));
      assert.ok(maxDiff > 0 && maxDiff < 0.05, `tanh vs erf GELU max diff ${maxDiff}`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('out-of-range and malformed token ids are rejected with the id, position and limit', async () => {
    await assert.rejects(
      te1.forward([49406, 49408, 49407]),
      /token id 49408 at input_ids\[0\]\[1\] is out of range; expected 0 <= id < "vocab_size" 49408/,
    );
    await assert.rejects(
      te1.forward([
        [49406, 1],
        [49406, -3],
      ]),
      /token id -3 at input_ids\[1\]\[1\]/,
    );
    await assert.rejects(te1.forward([49406, 1.5]), /input_ids\[0\]\[1\] = 1\.5 is not an integer/);
    await assert.rejects(te1.forward([[49406, 1], [49406]]), /row 1 has 1 tokens, row 0 has 2/);
    await assert.rejects(
      te1.forward(new Array<number>(78).fill(1)),
      /78 tokens, but "max_position_embeddings" in .*config\.json is 77/,
    );
    await assert.rejects(te1.forward([]), /input_ids is empty/);
    await assert.rejects(
      te1.forward({ data: new BigInt64Array(6), shape: [2, 4] }),
      /int64 \[B, L\] with B·L values, found shape \[2, 4\] holding 6 values/,
    );
  });
});

describe('CLIP text config parsing', () => {
  test('the real SD1.5 and SDXL text encoder configs parse', { skip: skipWithoutFixtures }, async (t) => {
    const root = fixture('configs');
    const found: string[] = [];
    for (const model of await readdir(root)) {
      for (const part of await readdir(join(root, model))) {
        if (!part.startsWith('text_encoder')) continue;
        const cfg = await readCLIPTextConfig(join(root, model, part));
        found.push(`${model}/${part}`);
        t.diagnostic(
          `${model}/${part}: ${cfg.numHiddenLayers} layers, ${cfg.hiddenSize} wide, ${cfg.hiddenAct}`,
        );
        assert.deepEqual(cfg.ignoredKeys, [], `${model}/${part}`);
        assert.equal(cfg.eosTokenId, 2);
        assert.equal(cfg.maxPositionEmbeddings, 77);
        assert.equal(cfg.vocabSize, 49408);
      }
    }
    assert.deepEqual(found.sort(), [
      'stable-diffusion-v1-5/text_encoder',
      'stable-diffusion-xl-base-1.0/text_encoder',
      'stable-diffusion-xl-base-1.0/text_encoder_2',
    ]);
    const g = await readCLIPTextConfig(join(root, 'stable-diffusion-xl-base-1.0', 'text_encoder_2'));
    assert.deepEqual(
      [
        g.hiddenSize,
        g.intermediateSize,
        g.numHiddenLayers,
        g.numAttentionHeads,
        g.projectionDim,
        g.hiddenAct,
      ],
      [1280, 5120, 32, 20, 1280, 'gelu'],
    );
    const l = await readCLIPTextConfig(join(root, 'stable-diffusion-xl-base-1.0', 'text_encoder'));
    assert.deepEqual(
      [l.hiddenSize, l.numHiddenLayers, l.numAttentionHeads, l.hiddenAct],
      [768, 12, 12, 'quick_gelu'],
    );
  });

  test('missing keys take transformers defaults; bad values name the key', () => {
    const d = parseCLIPTextConfig({}, 'x/config.json');
    assert.deepEqual(
      [d.vocabSize, d.hiddenSize, d.numHiddenLayers, d.hiddenAct, d.eosTokenId, d.layerNormEps],
      [49408, 512, 12, 'quick_gelu', 49407, 1e-5],
    );
    assert.throws(
      () => parseCLIPTextConfig({ hidden_size: 30, num_attention_heads: 4 }, 'x/config.json'),
      /x\/config\.json: "hidden_size" 30 must be divisible by "num_attention_heads" 4/,
    );
    assert.throws(
      () => parseCLIPTextConfig({ hidden_size: '768' }, 'x/config.json'),
      /x\/config\.json: "hidden_size" must be a number, found "768"/,
    );
    assert.throws(
      () => parseCLIPTextConfig({ num_hidden_layers: 0 }, 'x/config.json'),
      /"num_hidden_layers" must be a positive integer, found 0/,
    );
    assert.throws(
      () => parseCLIPTextConfig({ model_type: 'clip' }, 'x/config.json'),
      /"model_type" = "clip" is not supported/,
    );
    assert.deepEqual(parseCLIPTextConfig({ some_new_key: 1 }, 'x/config.json').ignoredKeys, ['some_new_key']);
  });

  test('pooled positions: argmax for eos_token_id 2, first eos otherwise', () => {
    const ids = BigInt64Array.from([49406n, 320n, 49407n, 49407n, 49406n, 5n, 49407n, 0n]);
    assert.deepEqual(pooledPositions(ids, 2, 4, 2), [2, 2]);
    // With a "real" eos id the first occurrence is taken; no occurrence → 0 (argmax of all-false).
    assert.deepEqual(pooledPositions(BigInt64Array.from([1n, 7n, 3n, 7n, 1n, 2n, 3n, 4n]), 2, 4, 7), [1, 0]);
    // eos_token_id 2 ignores where id 2 is: the largest id wins.
    assert.deepEqual(pooledPositions(BigInt64Array.from([2n, 9n, 2n]), 1, 3, 2), [1]);
  });
});
