import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { RANK_MALLOC_TUNABLES, withRankMallocTunables } from './malloc-tunables.js';

test('rank malloc tunables join what GLIBC_TUNABLES holds and yield to any malloc setting of the user', () => {
  assert.equal(withRankMallocTunables({ PATH: '/bin' }, 'linux')?.GLIBC_TUNABLES, RANK_MALLOC_TUNABLES);
  assert.equal(withRankMallocTunables({ PATH: '/bin' }, 'linux')?.PATH, '/bin');
  assert.equal(
    withRankMallocTunables({ GLIBC_TUNABLES: 'glibc.cpu.hwcaps=-AVX512F' }, 'linux')?.GLIBC_TUNABLES,
    `glibc.cpu.hwcaps=-AVX512F:${RANK_MALLOC_TUNABLES}`,
  );
  assert.equal(withRankMallocTunables({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=4' }, 'linux'), undefined);
  assert.equal(withRankMallocTunables({ DISTRIFUSION_MALLOC_TUNABLES: '0' }, 'linux'), undefined);
  assert.equal(withRankMallocTunables({}, 'darwin'), undefined);
});

// The dynamic loader lists the tunables as glibc parsed them: a value out of range would be dropped.
const loader = '/lib64/ld-linux-x86-64.so.2';
test('glibc takes every rank malloc tunable at its value', { skip: !existsSync(loader) }, () => {
  const env = withRankMallocTunables({}, 'linux')!;
  const listed = execFileSync(loader, ['--list-tunables'], { env, encoding: 'utf8' });
  const value = (name: string) => new RegExp(`^glibc\\.malloc\\.${name}: (\\S+)`, 'm').exec(listed)?.[1];
  assert.equal(Number(value('arena_max')), 1);
  assert.equal(Number(value('mmap_max')), 0);
  assert.equal(Number(value('trim_threshold')), 2 ** 40);
  assert.equal(Number(value('top_pad')), 64 * 2 ** 20);
});
