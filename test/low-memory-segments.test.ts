// DistriConfig.lowMemory's cuts, read off the asynchronous graph's segment plan (tiny SDXL UNet, 2 bands):
// a segment holds the self-attention K/V of as many attentions as the budget allows, and no more.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { planSegments } from '../src/graph/segments.js';
import { UNet2DConditionModel } from '../src/models/unet-2d-condition.js';
import { patchGeometry } from '../src/parallel/geometry.js';
import { createPatchHooks, type ExchangePoint, ExchangeRegistry } from '../src/parallel/patch-hooks.js';
import { fixture, skipWithoutFixtures } from './helpers/fixtures.js';

let unet: UNet2DConditionModel;
before(async () => {
  if (!skipWithoutFixtures) unet = await UNet2DConditionModel.fromPretrained(fixture('sdxl-tiny', 'unet'));
});
after(async () => {
  await unet?.dispose();
});

const LATENT = { rows: 16, cols: 12 };

/** Whole-image K/V bytes of a self-attention's point: every member's K and V. */
function kvBytes(p: ExchangePoint): number {
  return p.batch * p.channels * p.rowsPerMember.reduce((a, b) => a + b, 0) * 4;
}

/** Per segment of member `member`'s asynchronous graph: the K/V points whose stale K/V it reads. */
function attentionsPerSegment(
  member: number,
  kvBytesPerSegment?: number,
): {
  segments: ExchangePoint[][];
  points: ExchangePoint[];
} {
  const geometry = patchGeometry(LATENT.rows, LATENT.cols, 2, unet.config.downBlockTypes.length);
  const registry = new ExchangeRegistry();
  const hooks = createPatchHooks({
    geometry,
    member,
    mode: 'corrected_async_gn',
    phase: 'async',
    registry,
    ...(kvBytesPerSegment !== undefined ? { kvBytesPerSegment } : {}),
  });
  const b = unet.buildGraph({
    batch: 2,
    height: LATENT.rows,
    width: LATENT.cols,
    contextLength: 77,
    hooks,
    name: 'unet-async',
  });
  const plan = planSegments(b);
  const kv = registry.points.filter((p) => p.kind === 'kv');
  const segments = plan.segments.map((s) => {
    const ids = new Set(
      s.inputs
        .map((i) => /^stale:(\d+):(before|after)_[kv]$/.exec(i.name))
        .filter((m) => m !== null)
        .map((m) => Number(m[1])),
    );
    return kv.filter((p) => ids.has(p.id));
  });
  return { segments, points: kv };
}

test('lowMemory: no budget, one body segment; budget 0, one segment per self-attention', {
  skip: skipWithoutFixtures,
}, () => {
  for (const member of [0, 1]) {
    const whole = attentionsPerSegment(member);
    const reading = whole.segments.filter((s) => s.length > 0);
    assert.equal(reading.length, 1, `member ${member}: one segment reads every stale K/V`);
    assert.equal(reading[0]!.length, whole.points.length);

    const cut = attentionsPerSegment(member, 0);
    assert.ok(cut.points.length > 2, 'the tiny UNet has several self-attentions');
    assert.deepEqual(
      cut.segments.filter((s) => s.length > 0).map((s) => s.length),
      cut.points.map(() => 1),
      `member ${member}: each self-attention starts its own segment`,
    );
  }
});

test('lowMemory: a budget groups consecutive self-attentions greedily, up to the budget', {
  skip: skipWithoutFixtures,
}, () => {
  const { points } = attentionsPerSegment(0, 0);
  const sizes = points.map(kvBytes);
  // Room for two of the largest, so that groups form, but not for all of them.
  const budget = 2 * Math.max(...sizes);
  assert.ok(sizes.reduce((a, b) => a + b, 0) > budget);
  for (const member of [0, 1]) {
    const { segments } = attentionsPerSegment(member, budget);
    const groups = segments.filter((s) => s.length > 0);
    // Every self-attention in exactly one segment, in model order.
    assert.deepEqual(
      groups.flat().map((p) => p.id),
      points.map((p) => p.id),
    );
    assert.ok(
      groups.length > 1 && groups.length < points.length,
      `member ${member}: ${groups.length} groups`,
    );
    groups.forEach((g, i) => {
      const bytes = g.reduce((a, p) => a + kvBytes(p), 0);
      assert.ok(bytes <= budget, `group ${i} holds ${bytes} bytes, over the budget of ${budget}`);
      const next = groups[i + 1];
      if (next) {
        assert.ok(
          bytes + kvBytes(next[0]!) > budget,
          `group ${i} (${bytes} bytes) had room for the next self-attention (${kvBytes(next[0]!)} bytes)`,
        );
      }
    });
  }
});
