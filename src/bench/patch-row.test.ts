// mergeRounds: a row run several times is summarised over the steps of all its runs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mergeRounds, type PatchRowResult, type StepRecord } from './patch-row.js';

function step(phase: StepRecord['phase'], ms: number): StepRecord {
  return {
    step: 0,
    round: 1,
    phase,
    ms,
    bytesPublished: ms * 10,
    computeMs: ms - 1,
    waitMs: 0,
    copyMs: 1,
    perRank: [],
  };
}

function result(launchMs: number, peakRssBytes: number, steps: StepRecord[]): PatchRowResult {
  const phase = { steps: 0, ms: 0, bytesPerStep: 0, computeMs: 0, waitMs: 0, copyMs: 0 };
  return {
    model: 'm',
    ranks: 2,
    threadsPerRank: 1,
    parallelism: 'patch',
    mode: 'corrected_async_gn',
    splitBatch: false,
    height: 64,
    width: 64,
    batch: 2,
    warmupSteps: 0,
    primed: true,
    sharedWeights: true,
    nchwcBlock: 0,
    packedGemm: false,
    exchangePoints: 3,
    launchMs,
    warmup: phase,
    async: phase,
    steps,
    peakRssBytes,
  };
}

test('mergeRounds: medians over every round, rounds numbered, highest peak, median launch', () => {
  const merged = mergeRounds([
    result(100, 5, [step('warmup', 50), step('async', 10), step('async', 40)]),
    result(300, 9, [step('warmup', 70), step('async', 20)]),
    result(200, 7, [step('warmup', 60), step('async', 30)]),
  ]);
  assert.deepEqual(
    merged.steps.map((s) => s.round),
    [1, 1, 1, 2, 2, 3, 3],
  );
  assert.equal(merged.async.steps, 4);
  assert.equal(merged.async.ms, 25); // median of 10, 40, 20, 30
  assert.equal(merged.async.bytesPerStep, 250);
  assert.equal(merged.warmup.steps, 3);
  assert.equal(merged.warmup.ms, 60);
  assert.equal(merged.launchMs, 200);
  assert.equal(merged.peakRssBytes, 9);
  assert.throws(() => mergeRounds([]), /no results/);
});
