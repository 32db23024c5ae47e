import assert from 'node:assert/strict';
import { test } from 'node:test';
import { distriConfig, LOW_MEMORY_SEGMENT_BYTES } from './config.js';

test('distriConfig fills the defaults, lowMemory off with its segment size ready', () => {
  const c = distriConfig({ height: 1024, width: 1024, ranks: 2 });
  assert.equal(c.warmupSteps, 4);
  assert.equal(c.mode, 'corrected_async_gn');
  assert.equal(c.parallelism, 'patch');
  assert.equal(c.splitBatch, true);
  assert.equal(c.lowMemory, false);
  assert.equal(c.splitVaeDecode, false);
  assert.equal(c.lowMemorySegmentBytes, LOW_MEMORY_SEGMENT_BYTES);
  assert.deepEqual(c.devices, ['cpu', 'cpu']);
  const cut = distriConfig({ height: 64, width: 64, lowMemory: true, lowMemorySegmentBytes: 0 });
  assert.equal(cut.lowMemorySegmentBytes, 0);
});

test('distriConfig names the field at fault, what it expected and what it got', () => {
  const cases: Array<[Parameters<typeof distriConfig>[0], RegExp]> = [
    [{ height: 64, width: 64, ranks: 0 }, /DistriConfig\.ranks: expected an integer >= 1, got 0/],
    [{ height: 64.5, width: 64 }, /DistriConfig\.height: expected a positive integer, got 64\.5/],
    [
      { height: 64, width: 64, lowMemory: true, lowMemorySegmentBytes: -1 },
      /DistriConfig\.lowMemorySegmentBytes: expected an integer >= 0, got -1/,
    ],
    [
      { height: 64, width: 64, mode: 'fast' as never },
      /DistriConfig\.mode: expected one of corrected_async_gn, .*, got fast/,
    ],
    [
      { height: 64, width: 64, ranks: 3, device: ['cpu', 'cpu'] },
      /DistriConfig\.device: expected one device or 3 \(one per rank\), got 2/,
    ],
  ];
  for (const [input, message] of cases) assert.throws(() => distriConfig(input), message);
});
