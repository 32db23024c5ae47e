import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { asFloat, compare, fixture, loadFixture, skipWithoutFixtures } from '../../test/helpers/fixtures.js';
import { readJson } from '../io/diffusers-folder.js';
import { WeightStore } from '../io/weights.js';
import { buildUNetGraph } from '../models/unet-2d-condition.js';
import { parseUNetConfig } from '../models/unet-config.js';
import { GraphBuilder, ShapeError } from './builder.js';
import * as F from './functional.js';
import type { ExchangeHooks } from './hooks.js';
import { CompiledGraph } from './runner.js';
import { planSegments } from './segments.js';
import { weightLoadingStats } from './session.js';

test('ops check shapes at build time and name the op, the module path and both shapes', () => {
  const b = new GraphBuilder('t');
  const x = b.input('x', 'float32', [1, 4, 8, 8]);
  const w = b.constFloat(new Array(8 * 3 * 9).fill(0), [8, 3, 3, 3]);
  assert.throws(
    () => b.scope('down_blocks', () => b.scope(0, () => F.conv2d(x, w, null))),
    (e: Error) =>
      e instanceof ShapeError &&
      /Conv at 'down_blocks\.0'/.test(e.message) &&
      /\[1, 4, 8, 8\]/.test(e.message) &&
      /\[8, 3, 3, 3\]/.test(e.message),
  );
  const y = b.input('y', 'float32', [2, 5]);
  assert.throws(() => F.add(x, y), /\[1, 4, 8, 8\] and \[2, 5\] do not broadcast/);
  assert.throws(() => F.reshape(y, [3, 4]), /cannot reshape \[2, 5\]/);
});

test('a graph runs and matches a float64 computation (conv with padding, exact gelu)', async () => {
  const b = new GraphBuilder('small');
  const x = b.input('x', 'float32', [1, 2, 3, 3]);
  const w = b.constFloat([1, 0, -1, 2, 0.5, 0, 0, 1, 1, -1, 0, 0.25, 1, 1, 1, 0, 0, 2], [1, 2, 3, 3]);
  b.output('conv', F.conv2d(x, w, null, { pads: [1, 1, 1, 1] }));
  b.output('gelu', F.gelu(x));
  const g = await CompiledGraph.fromBuilder(b, { threads: 1 });
  const xs = Float32Array.from({ length: 18 }, (_, i) => Math.sin(i + 1));
  const out = await g.run({ x: { data: xs, shape: [1, 2, 3, 3] } });
  const conv = new Float64Array(9);
  for (let oy = 0; oy < 3; oy++)
    for (let ox = 0; ox < 3; ox++)
      for (let c = 0; c < 2; c++)
        for (let ky = 0; ky < 3; ky++)
          for (let kx = 0; kx < 3; kx++) {
            const iy = oy + ky - 1;
            const ix = ox + kx - 1;
            if (iy < 0 || iy > 2 || ix < 0 || ix > 2) continue;
            conv[oy * 3 + ox]! +=
              xs[c * 9 + iy * 3 + ix]! *
              [1, 0, -1, 2, 0.5, 0, 0, 1, 1, -1, 0, 0.25, 1, 1, 1, 0, 0, 2][c * 9 + ky * 3 + kx]!;
          }
  assert.ok(compare(out.conv!.data as Float32Array, conv).relL2 < 1e-6);
  const erf = (z: number) => {
    // Abramowitz-Stegun 7.1.26 is too coarse; integrate instead.
    let s = 0;
    const n = 2000;
    for (let i = 0; i < n; i++) {
      const t = ((i + 0.5) / n) * z;
      s += Math.exp(-t * t);
    }
    return ((2 / Math.sqrt(Math.PI)) * s * z) / n;
  };
  const gelu = Array.from(xs, (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)));
  assert.ok(compare(out.gelu!.data as Float32Array, gelu).relL2 < 1e-6);
  await g.dispose();
});

test('outputs are written by the node that makes them, except where a copy is needed', async () => {
  const b = new GraphBuilder('outs');
  const x = b.input('x', 'float32', [2, 3]);
  const y = F.mul(x, 3);
  b.output('y_out', y); // made by Mul: no copy
  b.split();
  const z = F.add(y, 1); // y crosses the cut under its output name
  b.output('z_a', z);
  b.output('z_b', z); // a second name for z: a copy
  b.output('x_out', x); // a graph input: a copy
  const c = F.mul(b.constFloat([2], []), 5);
  b.output('c_out', c); // made from constants alone: a copy
  b.output('w', F.sub(z, y));
  const plan = planSegments(b);
  const identities = plan.segments.flatMap((sg) =>
    sg.graph.nodes.filter((n) => n.opType === 'Identity').map((n) => n.outputs[0]),
  );
  assert.deepEqual(identities.sort(), ['c_out', 'x_out', 'z_b']);
  assert.ok(!plan.segments.some((sg) => sg.graph.nodes.some((n) => n.inputs.includes(y.name))));
  const g = await CompiledGraph.compile(plan, { threads: 1 });
  const xs = [0.5, -1, 2, 3.25, 0, -7];
  const out = await g.run({ x: { data: new Float32Array(xs), shape: [2, 3] } });
  const want: Record<string, number[]> = {
    y_out: xs.map((v) => v * 3),
    z_a: xs.map((v) => v * 3 + 1),
    z_b: xs.map((v) => v * 3 + 1),
    x_out: xs,
    c_out: [10],
    w: xs.map(() => 1),
  };
  for (const [name, values] of Object.entries(want)) {
    assert.deepEqual(Array.from(out[name]!.data as Float32Array), values, name);
  }
  await g.dispose();
});

test('inputs a hook supplies are asked for one segment ahead of their first reader', async () => {
  const b = new GraphBuilder('ahead');
  const x = b.input('x', 'float32', [3]);
  const y = F.mul(x, 2);
  b.output('y', y);
  b.split();
  const z = F.add(y, b.input('s', 'float32', [3]));
  b.output('z', z);
  b.split();
  b.output('w', F.add(z, b.input('t', 'float32', [3])));
  const g = await CompiledGraph.fromBuilder(b, { threads: 1 });
  assert.equal(g.segmentCount, 3);
  const events: string[] = [];
  const out = await g.run(
    { x: { data: new Float32Array([1, 2, 3]), shape: [3] } },
    {
      input: (info, into) => {
        events.push(`input ${info.name}`);
        (into.data as Float32Array).fill(info.name === 's' ? 10 : 100);
        return into;
      },
      onOutput: (name, t) => {
        events.push(`output ${name}`);
        return name !== 'w' && t.data.length === 3;
      },
    },
  );
  // The peers' stale data a segment reads is copied out before the segment ahead of it publishes.
  assert.deepEqual(events, ['input s', 'output y', 'input t', 'output z', 'output w']);
  assert.deepEqual(Array.from(out.w!.data as Float32Array), [112, 114, 116]);
  await g.dispose();
});

test('a UNet cut into segments at every exchange point computes what the uncut one does', {
  skip: skipWithoutFixtures,
}, async () => {
  const dir = fixture('sdxl-tiny', 'unet');
  const config = parseUNetConfig(await readJson(`${dir}/config.json`), 'config.json');
  const weights = await WeightStore.fromFiles(dir, [`${dir}/diffusion_pytorch_model.safetensors`]);
  const io = await loadFixture('unet-sdxl-tiny', 'io_b.safetensors');
  const spec = { batch: 1, height: 16, width: 24 };
  // Identity exchanges: every conv input, self-attention K/V and GroupNorm statistic crosses a cut.
  const identity: ExchangeHooks = {
    conv2dInput: (s) => {
      const [y] = s.x.graph.exchange('halo', [s.x], [{ dtype: 'float32', shape: s.x.shape }]);
      return { x: y!, pads: [s.padding[0], s.padding[1], s.padding[0], s.padding[1]] };
    },
    selfAttentionKV: (s) => {
      const [k, v] = s.k.graph.exchange('kv', [s.k, s.v], [s.k, s.v]);
      return { k: k!, v: v! };
    },
    groupNormStats: (s) => {
      const m = F.momentsToStats(F.groupMoments(s.x, s.groups));
      return s.x.graph.exchange('gn', [m], [{ dtype: 'float32', shape: m.shape }])[0];
    },
  };
  const whole = await CompiledGraph.fromBuilder(buildUNetGraph(config, weights, spec), { threads: 1 });
  // Cutting must not change the arithmetic. Two things do, legitimately, by float32 rounding (about 1e-6
  // here): GroupNorm statistics as exchanged moments (E[x], E[x²]), and ORT's NCHWc layout rewrite, which
  // fuses differently across cuts ('all' level only). So the cut graph is compared with an uncut one that
  // uses the same moments and the 'extended' level: they must agree bit for bit.
  const asMoments: ExchangeHooks = { groupNormStats: (s) => F.momentsToStats(F.groupMoments(s.x, s.groups)) };
  const sameArithmetic = { threads: 1, optimization: 'extended' as const };
  const uncut = await CompiledGraph.fromBuilder(
    buildUNetGraph(config, weights, { ...spec, hooks: asMoments }),
    sameArithmetic,
  );
  const cut = await CompiledGraph.fromBuilder(
    buildUNetGraph(config, weights, { ...spec, hooks: identity }),
    sameArithmetic,
  );
  // One segment, plus the prologue computed from the text conditioning alone.
  assert.equal(whole.segmentCount, 2);
  assert.equal(whole.plan.segments[0]!.invariant, true);
  assert.ok(cut.segmentCount > 100, `only ${cut.segmentCount} segments`);
  const feeds = {
    sample: asFloat(io.sample),
    timestep: { data: new Float32Array([500]), shape: [1] },
    encoder_hidden_states: asFloat(io.encoder_hidden_states),
    text_embeds: asFloat(io.text_embeds),
    time_ids: asFloat(io.time_ids),
  };
  const a = (await whole.run(feeds)).out_sample!.data as Float32Array;
  let exchanges = 0;
  const b = (
    await cut.run(feeds, {
      exchange: (_m, locals) => {
        exchanges++;
        return [...locals];
      },
    })
  ).out_sample!.data as Float32Array;
  assert.equal(exchanges, cut.segmentCount - 2);
  assert.deepEqual(b, (await uncut.run(feeds)).out_sample!.data);
  const torch = asFloat(io['out.sample']).data;
  assert.ok(compare(b, torch).relL2 < 1e-5, `cut vs diffusers rel L2 ${compare(b, torch).relL2}`);
  // Filling the runner's buffers instead: they come from its pool and go back after their last reader, so
  // far fewer distinct buffers serve the exchanges than there are exchanges (34 for 108 here; one each
  // without the pool).
  const seen = new Set<unknown>();
  const filled = (
    await cut.run(feeds, {
      exchange: (_m, locals, into) => {
        into.forEach((t, i) => {
          assert.deepEqual(t.shape, locals[i]!.shape);
          (t.data as Float32Array).set(locals[i]!.data as Float32Array);
          seen.add(t.data);
        });
        return into;
      },
    })
  ).out_sample!.data as Float32Array;
  assert.deepEqual(filled, b);
  assert.ok(seen.size < exchanges / 2, `${seen.size} buffers for ${exchanges} exchanges`);
  assert.ok(compare(a, torch).relL2 < 1e-5);
  assert.ok(weightLoadingStats.mapped > 0, 'weights were not memory-mapped');
  // The prologue (cross-attention K/V, added embeddings) runs once while the conditioning is unchanged...
  const prologueMs = whole.segmentMs[0]!;
  const again = (await whole.run(feeds)).out_sample!.data as Float32Array;
  assert.equal(whole.segmentMs[0], prologueMs);
  assert.deepEqual(again, a);
  // ...and again when it changes, giving what a fresh graph gives.
  const other = {
    ...feeds,
    encoder_hidden_states: {
      ...feeds.encoder_hidden_states,
      data: feeds.encoder_hidden_states.data.map((v) => v * 0.5),
    },
  };
  const changed = (await whole.run(other)).out_sample!.data as Float32Array;
  assert.ok(whole.segmentMs[0]! > prologueMs);
  const fresh = await CompiledGraph.fromBuilder(buildUNetGraph(config, weights, spec), { threads: 1 });
  assert.deepEqual(changed, (await fresh.run(other)).out_sample!.data);
  await fresh.dispose();
  await whole.dispose();
  await cut.dispose();
  await uncut.dispose();
});

test('devices: unknown names and missing providers fail with a clear error', async () => {
  const { executionProviders } = await import('./session.js');
  assert.deepEqual(executionProviders('cpu'), ['cpu']);
  assert.throws(
    () => executionProviders('tpu:0'),
    /device 'tpu:0': expected 'cpu', 'cuda', 'cuda:N' or 'webgpu'/,
  );
  if (!existsSync(join(dirname(createRequire(import.meta.url).resolve('onnxruntime-node')), '..', 'bin')))
    return;
  // This checkout installs onnxruntime-node without the CUDA download (.npmrc), so CUDA must be reported missing.
  assert.throws(
    () => executionProviders('cuda:0'),
    /device 'cuda:0': the CUDA execution provider is not installed/,
  );
});
