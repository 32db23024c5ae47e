import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PatchAssembler } from './patch-assembly.js';
import type { ExchangePoint } from './patch-hooks.js';
import { ABORT_WORDS, createExchangeBuffers, RankFailure, SharedExchange } from './shared-exchange.js';

// One K/V point over 3 members with uneven bands: batch 2, width 2 (channels 4 = K then V), tokens 1, 2, 1.
const point: ExchangePoint = {
  id: 0,
  key: 'kv@attn1',
  kind: 'kv',
  path: 'attn1',
  batch: 2,
  channels: 4,
  cols: 1,
  rowsPerMember: [1, 2, 1],
  pad: 0,
  weights: [],
};
const width = 2;

/** K or V of member m: [batch, tokens, width], each value naming (part, member, batch, token, channel). */
function piece(part: number, m: number): Float32Array {
  const tokens = point.rowsPerMember[m]!;
  const out = new Float32Array(point.batch * tokens * width);
  for (let b = 0; b < point.batch; b++)
    for (let t = 0; t < tokens; t++)
      for (let c = 0; c < width; c++)
        out[(b * tokens + t) * width + c] = part * 1e4 + m * 1e3 + b * 100 + t * 10 + c;
  return out;
}

/** Members' K or V concatenated along tokens, per batch entry (what the graph's Concat sees). */
function expected(part: number, members: number[]): Float32Array {
  const values: number[] = [];
  for (let b = 0; b < point.batch; b++) {
    for (const m of members) {
      const p = piece(part, m);
      const len = point.rowsPerMember[m]! * width;
      values.push(...p.subarray(b * len, (b + 1) * len));
    }
  }
  return Float32Array.from(values);
}

/** What each member's asynchronous graph reads: the K and V of the members before and after it. */
function staleInputs(member: number): string[] {
  const where = [...(member > 0 ? ['before'] : []), ...(member < 2 ? ['after'] : [])];
  return where.flatMap((w) => [`stale:0:${w}_k`, `stale:0:${w}_v`]);
}

function setup(timeoutMs = 50, buffers = createExchangeBuffers([point], 3)) {
  const abort = new SharedArrayBuffer(ABORT_WORDS * 4);
  return [0, 1, 2].map((member) => {
    const exchange = new SharedExchange({
      points: [point],
      members: 3,
      member,
      buffers,
      abort,
      timeoutMs,
      rankOf: (m) => m,
    });
    const assembler = new PatchAssembler({
      exchange,
      points: [point],
      member,
      members: 3,
      mode: 'corrected_async_gn',
      warmupSteps: 0,
      staleInputs: staleInputs(member),
    });
    return { exchange, assembler };
  });
}

test('K/V published as two parts: peers see it only once both are in, and assemble K and V apart', () => {
  const ranks = setup();
  // Step 1 (sequence 1, synchronous) publishes fresh K/V; step 2 reads it as stale.
  for (const r of ranks) r.assembler.begin(1, 1, 0, false);
  for (const [m, r] of ranks.entries()) {
    // V first: the order of a segment's outputs is not fixed.
    r.assembler.publishFresh('fresh:0:v', { data: piece(1, m), shape: [] });
    if (m === 0) {
      const reader = ranks[1]!.exchange;
      assert.throws(() => reader.read(point, 0, 1), RankFailure, 'half a K/V point must not be announced');
    }
    assert.equal(r.assembler.publishFresh('fresh:0:k', { data: piece(0, m), shape: [] }), true);
  }
  const middle = ranks[1]!.assembler;
  middle.begin(2, 2, 0, true);
  const into = (tokens: number) => ({ data: new Float32Array(point.batch * tokens * width), shape: [] });
  assert.deepEqual(middle.staleInput('stale:0:before_k', into(1)).data, expected(0, [0]));
  assert.deepEqual(middle.staleInput('stale:0:before_v', into(1)).data, expected(1, [0]));
  assert.deepEqual(middle.staleInput('stale:0:after_k', into(1)).data, expected(0, [2]));
  assert.deepEqual(middle.staleInput('stale:0:after_v', into(1)).data, expected(1, [2]));
  const first = ranks[0]!.assembler;
  first.begin(2, 2, 0, true);
  assert.deepEqual(first.staleInput('stale:0:after_v', into(3)).data, expected(1, [1, 2]));
  // A K/V point's fresh outputs are its parts only: a whole-point name is not one of this rank's outputs.
  assert.equal(first.publishFresh('fresh:0', { data: new Float32Array(), shape: [] }), false);
});

test('a synchronous K/V exchange assembles the whole image K and V from two locals each', () => {
  const ranks = setup(5000);
  const marker = { kind: 'kv', path: 'attn1', local: [], assembled: [], meta: { point: 0 } };
  const total = 4;
  const outs = new Map<number, Float32Array[]>();
  // Members 2 and 0 publish first, so that member 1 finds every piece without waiting.
  for (const r of ranks) r.assembler.begin(0, 0, 0, false);
  for (const m of [2, 0, 1]) {
    const r = ranks[m]!;
    const locals = [0, 1].map((part) => ({ data: piece(part, m), shape: [] }));
    const into = [0, 1].map(() => ({ data: new Float32Array(point.batch * total * width), shape: [] }));
    if (m === 1)
      outs.set(
        m,
        r.assembler.exchangeSync(marker, locals, into).map((t) => t.data as Float32Array),
      );
    else {
      for (const [i, t] of locals.entries()) r.exchange.write(point, 0, t.data, i, 2);
      r.exchange.announce(point, 0);
    }
  }
  const [k, v] = outs.get(1)!;
  assert.deepEqual(k, expected(0, [0, 1, 2]));
  assert.deepEqual(v, expected(1, [0, 1, 2]));
});

test('a part of the wrong length names the point, the part and both lengths', () => {
  const ranks = setup();
  for (const r of ranks) r.assembler.begin(0, 0, 0, false);
  const r = ranks[0];
  assert.throws(
    () => r!.exchange.write(point, 0, new Float32Array(3), 1, 2),
    /rank 0: kv at 'attn1' publishes 3 values as part 2 of 2, slot holds 4/,
  );
});

test("a rank faults in its own slots at launch and leaves its peers' alone", () => {
  const buffers = createExchangeBuffers([point], 3);
  const ranks = setup(50, buffers);
  const data = new Float32Array(buffers.data);
  data.fill(7);
  ranks[1]!.exchange.faultInOwnSlots();
  // Slots are laid out [point][member]; a member's slot holds batch 2 x channels 4 x its tokens (1, 2, 1):
  // 8, 16 and 8 values, so member 1 owns [8, 24).
  assert.equal(data.length, 32);
  const own = (i: number) => i >= 8 && i < 24;
  for (let i = 0; i < data.length; i++) assert.equal(data[i], own(i) ? 0 : 7, `element ${i}`);
});

test('an owner overwrites its slot only once every peer has copied the stale data out of it', () => {
  const ranks = setup();
  const publish = (m: number) => {
    ranks[m]!.assembler.publishFresh('fresh:0:k', { data: piece(0, m), shape: [] });
    ranks[m]!.assembler.publishFresh('fresh:0:v', { data: piece(1, m), shape: [] });
  };
  for (const r of ranks) r.assembler.begin(0, 0, 0, false);
  for (const m of [0, 1, 2]) publish(m);
  // Step 1 is asynchronous: members 0 and 2 copy the stale K/V of sequence 0, member 1 has not yet.
  for (const r of ranks) r.assembler.begin(1, 1, 0, true);
  const into = (tokens: number) => ({ data: new Float32Array(point.batch * tokens * width), shape: [] });
  for (const what of ['after_k', 'after_v']) ranks[0]!.assembler.staleInput(`stale:0:${what}`, into(3));
  for (const what of ['before_k', 'before_v']) ranks[2]!.assembler.staleInput(`stale:0:${what}`, into(3));
  // Member 0's fresh K/V would overwrite what member 1 is still to read: it waits, and times out naming it.
  assert.throws(
    () => publish(0),
    (e: Error) =>
      e instanceof RankFailure &&
      e.rank === 1 &&
      /waiting for rank 1 to read kv 'attn1' \(step 1\)/.test(e.message),
  );
  // Half of member 1's reads are not enough; all of them are.
  const middle = ranks[1]!.assembler;
  const before = middle.staleInput('stale:0:before_k', into(1)).data;
  assert.throws(() => publish(2), RankFailure);
  for (const what of ['before_v', 'after_k', 'after_v']) middle.staleInput(`stale:0:${what}`, into(1));
  assert.deepEqual(before, expected(0, [0]));
  publish(0);
  publish(2);
  // Member 1 publishes after its reads, as a graph's outputs follow its inputs.
  publish(1);
  ranks[1]!.assembler.begin(2, 2, 0, true);
  assert.deepEqual(
    ranks[1]!.assembler.staleInput('stale:0:before_k', into(1)).data,
    expected(0, [0]),
    'sequence 1 carries the same values, now read from the one slot',
  );
});

test('a rank that publishes over its own data before reading it as stale is stopped', () => {
  const gn: ExchangePoint = {
    ...point,
    key: 'gn@norm1',
    kind: 'gn',
    path: 'norm1',
    channels: 2,
    cols: 2,
    rowsPerMember: [1, 1, 1],
  };
  const ranks = setup();
  const ex = ranks[1]!.exchange;
  const stats = new Float32Array(gn.batch * gn.channels * 2);
  // Sequence 0 is published; sequence 1 goes over it before sequence 0 is read back from the own slot.
  const exchanges = ranks.map((r) => r.exchange);
  for (const e of exchanges) e.markConsumed(gn, 1);
  ex.write(gn, 0, stats, 0, 1);
  ex.announce(gn, 0);
  assert.equal(ex.read(gn, 1, 0).length, stats.length, 'reading its own data of the step is fine');
  ex.write(gn, 1, stats, 0, 1);
  ex.announce(gn, 1);
  assert.throws(
    () => ex.read(gn, 1, 0),
    /rank 1: gn at 'norm1' reads its own data of step 0 after publishing step 1 over it/,
  );
});
