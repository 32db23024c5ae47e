import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
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
  assert.equal(Number(value('hugetlb')), 1);
});

// Huge pages need THP in 'madvise' (or 'always') mode and a glibc that knows the tunable (2.35+).
const thpMode = existsSync('/sys/kernel/mm/transparent_hugepage/enabled')
  ? /\[(\w+)\]/.exec(readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))?.[1]
  : undefined;
const glibcHugetlb =
  existsSync(loader) &&
  execFileSync(loader, ['--list-tunables'], { encoding: 'utf8' }).includes('glibc.malloc.hugetlb');
test('a process started with the rank malloc tunables backs its typed arrays with transparent huge pages', {
  skip: thpMode === 'never' || thpMode === undefined || !glibcHugetlb,
}, () => {
  const mib = 256;
  const probe = [
    "const { readFileSync } = require('node:fs');",
    `const a = new Float32Array(${mib} * 2 ** 18); a.fill(1);`,
    "const m = /^AnonHugePages:\\s+(\\d+) kB/m.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'));",
    'console.log(JSON.stringify({ kb: Number(m[1]), sum: a[0] + a[a.length - 1] }));',
  ].join('\n');
  const env = withRankMallocTunables({ PATH: process.env.PATH }, 'linux')!;
  const out = JSON.parse(execFileSync(process.execPath, ['-e', probe], { env, encoding: 'utf8' }));
  assert.equal(out.sum, 2);
  // Most of the array sits in 2 MiB pages (the heap around it may add more).
  assert.ok(out.kb >= (mib / 2) * 1024, `AnonHugePages ${out.kb} kB for a ${mib} MiB array`);
});
