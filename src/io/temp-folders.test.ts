import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { test } from 'node:test';
import { makeTempFolder, removeOrphanedTempFolders } from './temp-folders.js';

test('folders of dead processes of this host are removed; live, foreign and unrelated ones stay', async () => {
  const parent = await mkdtemp(join(tmpdir(), 'temp-folders-test-'));
  try {
    const own = await makeTempFolder(parent, 'distrifusion-bench');
    const m = /^distrifusion-bench-(.+)\.(\d+)-[A-Za-z0-9]{6}$/.exec(basename(own));
    assert.ok(m, `folder name ${basename(own)}`);
    const [, host, pid] = m;
    assert.equal(Number(pid), process.pid);
    // A process that has exited: its pid names no process now.
    const dead = spawnSync(process.execPath, ['-e', '']).pid;
    const names = {
      deadWeights: `distrifusion-weights-${host}.${dead}-a1B2c3`,
      deadLinks: `.distrifusion-links-${host}.${dead}-d4E5f6`,
      livePacked: `distrifusion-packed-${host}.${process.pid}-g7H8i9`,
      otherHost: `distrifusion-weights-${host}x.${dead}-j1K2l3`,
      unrelated: `distrifusion-weights-${dead}-m4N5o6`,
    };
    for (const name of Object.values(names)) {
      await mkdir(join(parent, name));
      await writeFile(join(parent, name, 'weights.f32'), 'x');
    }
    const removed = await removeOrphanedTempFolders(parent);
    assert.deepEqual(removed.sort(), [names.deadLinks, names.deadWeights].sort());
    assert.deepEqual(
      (await readdir(parent)).sort(),
      [basename(own), names.livePacked, names.otherHost, names.unrelated].sort(),
    );
    // The first folder made in a parent swept it (the one made above, before the orphans existed); later
    // ones do not walk the parent again.
    await mkdir(join(parent, names.deadWeights));
    const next = await makeTempFolder(parent, 'distrifusion-weights');
    assert.ok(existsSync(next));
    assert.ok(existsSync(join(parent, names.deadWeights)));
    const fresh = await mkdtemp(join(tmpdir(), 'temp-folders-test-'));
    try {
      await mkdir(join(fresh, names.deadWeights));
      await makeTempFolder(fresh, 'distrifusion-packed');
      assert.ok(!existsSync(join(fresh, names.deadWeights)), 'the first folder in a parent sweeps it');
    } finally {
      await rm(fresh, { recursive: true, force: true });
    }
  } finally {
    await rm(parent, { recursive: true, force: true });
  }
});
