import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { RANK_NODE_FLAGS, withRankNodeFlags } from './rank-node-flags.js';

test('rank node flags join the given ones, once, and yield to a negation or the switch', () => {
  assert.deepEqual(withRankNodeFlags(['--import', 'tsx'], {}), ['--import', 'tsx', ...RANK_NODE_FLAGS]);
  assert.equal(withRankNodeFlags(['--single-threaded-gc'], {}), undefined);
  assert.equal(withRankNodeFlags(['--single_threaded_gc'], {}), undefined);
  assert.equal(withRankNodeFlags(['--no-single-threaded-gc'], {}), undefined);
  assert.equal(withRankNodeFlags([], { DISTRIFUSION_SINGLE_THREADED_GC: '0' }), undefined);
  assert.deepEqual(withRankNodeFlags([], { DISTRIFUSION_SINGLE_THREADED_GC: '1' }), [...RANK_NODE_FLAGS]);
});

// What the flags are for: a thread that drops many large ArrayBuffers (as a rank does with every output
// onnxruntime-node hands it) collects them itself, and V8's helper threads take no CPU. Without the flags
// the helpers do take some, which shows the probe can see it.
const probe = `
const { readFileSync, readdirSync } = require('node:fs');
const keep = [];
for (let i = 0; i < 1500; i++) {
  const b = new Float32Array(2.5e6);
  b[0] = i;
  keep.push(b);
  if (keep.length > 4) keep.shift();
}
let others = 0;
for (const tid of readdirSync('/proc/self/task')) {
  if (Number(tid) === process.pid) continue;
  const stat = readFileSync('/proc/self/task/' + tid + '/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  others += Number(f[11]) + Number(f[12]);
}
console.log(others);
`;
test("with the rank node flags, V8's helper threads do not collect a thread's garbage", {
  skip: !existsSync('/proc/self/task'),
}, () => {
  const helperTicks = (flags: readonly string[]) =>
    Number(execFileSync(process.execPath, [...flags, '-e', probe], { encoding: 'utf8' }).trim());
  const withFlags = helperTicks(RANK_NODE_FLAGS);
  const without = helperTicks([]);
  assert.ok(withFlags <= 1, `helper threads took ${withFlags} clock ticks with ${RANK_NODE_FLAGS.join(' ')}`);
  assert.ok(without > withFlags, `helper threads took ${without} clock ticks without the flags`);
});
