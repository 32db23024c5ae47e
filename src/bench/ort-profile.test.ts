// bench profile: ORT trace events summed by operator over each session's last run, segments regrouped.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { profileGroup, profileTable, readProfiles, summariseSessionProfile } from './ort-profile.js';

const run = (ts: number, dur: number) => ({ cat: 'Session', name: 'model_run', ts, dur });
const node = (name: string, op: string, ts: number, dur: number) => ({
  cat: 'Node',
  name: `${name}_kernel_time`,
  ts,
  dur,
  args: { op_name: op },
});

// Two runs; only the nodes inside the second one count. Durations in µs.
const events = [
  run(0, 1000),
  node('a/Conv_1', 'Conv', 10, 500),
  run(2000, 3000),
  node('a/Conv_1', 'Conv', 2010, 1500),
  node('b/Conv_2', 'Conv', 2600, 500),
  node('c/Gemm_3', 'Gemm', 3200, 250),
  { cat: 'Node', name: 'c/Gemm_3_fence_before', ts: 3190, dur: 7, args: { op_name: 'Gemm' } },
];

test('summariseSessionProfile: kernel time per operator within the last model_run', () => {
  const s = summariseSessionProfile(events, 'p.json');
  assert.equal(s.runs, 2);
  assert.equal(s.lastRunMs, 3);
  assert.deepEqual(Object.fromEntries(s.opMs), { Conv: 2, Gemm: 0.25 });
  assert.throws(() => summariseSessionProfile({}, 'p.json'), /p\.json: expected an array/);
});

test('profileGroup strips the timestamp and the segment suffix', () => {
  assert.equal(
    profileGroup('/x/2x1-patch-rank0-unet-async-s000_2026-11-27_00-09-38_615.json'),
    '2x1-patch-rank0-unet-async',
  );
  assert.equal(profileGroup('1x1-rank0-unet-sync-s012_2026-11-27_00-06-33.json'), '1x1-rank0-unet-sync');
});

test('readProfiles adds the segments of a graph; profileTable lists operators and totals', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'distrifusion-profile-test-'));
  try {
    const files = [
      join(dir, 'r-rank0-unet-sync-s000_2026-11-27_00-00-00_1.json'),
      join(dir, 'r-rank0-unet-sync-s001_2026-11-27_00-00-00_2.json'),
      join(dir, 'r-rank1-unet-sync-s000_2026-11-27_00-00-00_3.json'),
    ];
    for (const f of files) await writeFile(f, JSON.stringify(events));
    const groups = await readProfiles(files);
    assert.deepEqual(
      groups.map((g) => [g.group, g.sessions, g.lastRunMs, g.opMs.get('Conv')]),
      [
        ['r-rank0-unet-sync', 2, 6, 4],
        ['r-rank1-unet-sync', 1, 3, 2],
      ],
    );
    const table = profileTable(groups);
    const line = (label: string) =>
      table
        .split('\n')
        .find((l) => l.startsWith(label))
        ?.split(/\s+/);
    assert.deepEqual(line('Conv'), ['Conv', '4', '2']);
    assert.deepEqual(line('all'), ['all', 'kernels', '5', '2']);
    await writeFile(files[0]!, 'not json');
    await assert.rejects(readProfiles(files), /r-rank0-unet-sync-s000_.*: not a readable ORT profile/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
