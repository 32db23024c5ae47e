// Smoke tests of `bench unet`, `bench patch` and `bench vae` at a tiny size: the table and the JSON carry every field,
// and every figure is finite. Speed is for benchmarks to measure, never for tests to assert.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Command } from 'commander';
import { fixture, skipWithoutFixtures } from '../../test/helpers/fixtures.js';
import { registerBenchCommand } from '../cli/bench-command.js';
import { type PatchBenchReport, toBeatThreads } from './patch-bench.js';
import type { UnetBenchReport } from './unet-bench.js';
import type { VaeBenchReport } from './vae-bench.js';

const tinyConfig = fixture('sdxl-tiny', 'unet', 'config.json');

async function runBench(args: string[]): Promise<{ out: string; err: string }> {
  let out = '';
  let err = '';
  const program = new Command('distrifusion').exitOverride();
  const io = {
    out: (t: string) => {
      out += t;
    },
    err: (t: string) => {
      err += t;
    },
  };
  registerBenchCommand(program, io);
  await program.parseAsync(['bench', ...args], { from: 'user' });
  return { out, err };
}

function assertFinite(what: string, v: unknown): void {
  assert.ok(typeof v === 'number' && Number.isFinite(v), `${what} is ${v}`);
}

test('bench unet: table and JSON at 64x64', { skip: skipWithoutFixtures }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'distrifusion-bench-test-'));
  try {
    const json = join(dir, 'unet.json');
    const { out } = await runBench([
      'unet',
      '--models',
      tinyConfig,
      '--threads',
      '1',
      '--repeats',
      '1',
      '--height',
      '64',
      '--width',
      '64',
      '--json',
      json,
    ]);
    for (const h of [
      'model',
      'ms/forward',
      'GFLOP/s',
      'conv GFLOP/s',
      'UNet/conv',
      'peak RSS',
      'peak PSS',
      'peak used',
    ])
      assert.ok(out.includes(h), `table lacks '${h}'`);
    assert.ok(out.includes('sdxl-tiny/unet'));
    const report = JSON.parse(await readFile(json, 'utf8')) as UnetBenchReport;
    assert.equal(report.rows.length, 1);
    const row = report.rows[0]!;
    assert.ok(row.ok, row.error);
    assert.deepEqual([row.height, row.width, row.threads, row.batch], [64, 64, 1, 1]);
    const r = row.result!;
    for (const [k, v] of Object.entries({
      ...r.unet,
      conv: r.conv?.gflops,
      ratio: r.ratioToConv,
      rss: row.peakRssBytes,
    })) {
      if (k !== 'runsMs') assertFinite(k, v);
    }
    assert.ok(r.unet.flops > 0 && row.peakRssBytes > 0);
    assert.equal(r.unet.runsMs.length, 1);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('bench patch: 1x1, 1x2 and 2x1 patch rows at 64x64, 2 steps, 2 rounds', {
  skip: skipWithoutFixtures,
}, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'distrifusion-bench-test-'));
  try {
    const json = join(dir, 'patch.json');
    const { out } = await runBench([
      'patch',
      '--config',
      tinyConfig,
      '--ranks',
      '1,2',
      '--parallelism',
      'patch',
      '--height',
      '64',
      '--width',
      '64',
      '--steps',
      '2',
      '--warmup-steps',
      '0',
      '--rounds',
      '2',
      '--ort-profile',
      join(dir, 'profiles'),
      '--json',
      json,
    ]);
    assert.ok(out.includes('2 rounds of every row'), 'the header names the rounds');
    for (const h of [
      'async ms',
      'vs 1x1',
      'vs 1x2',
      'exchanged/step',
      'rank compute ms',
      'wait ms',
      'peak RSS',
      'launch s',
    ]) {
      assert.ok(out.includes(h), `table lacks '${h}'`);
    }
    const report = JSON.parse(await readFile(json, 'utf8')) as PatchBenchReport;
    assert.deepEqual(
      report.rows.map((r) => r.key),
      ['1x1', '1x2', '2x1 patch corrected_async_gn'],
    );
    for (const row of report.rows) {
      assert.ok(row.ok, `${row.key}: ${row.error}`);
      const r = row.result!;
      // Every row ran twice: its summary covers the steps of both runs.
      assert.equal(r.warmup.steps + r.async.steps, 4);
      assert.deepEqual(
        r.steps.map((st) => st.round),
        [1, 1, 2, 2],
      );
      for (const [k, v] of Object.entries({
        ...r.async,
        launch: r.launchMs,
        speedup: row.speedup,
        vs: row.speedupOverThreads,
        rss: row.peakRssBytes,
      })) {
        assertFinite(`${row.key} ${k}`, v);
      }
    }
    const split = report.rows[2]!.result!;
    assert.ok(split.exchangePoints > 0 && split.async.bytesPerStep > 0, 'two patch ranks exchange');
    assert.equal(report.rows[0]!.speedup, 1);
    // The 2x1 row's fastest and slowest rank: medians, here of two steps, of their compute times.
    const computes = split.steps
      .filter((st) => st.phase === 'async')
      .map((st) => st.perRank.map((p) => p.computeMs));
    assert.equal(computes.length, 2);
    const mid = (v: number[]) => ((v[0]! + v[1]!) / 2).toFixed(0);
    const spread = `${mid(computes.map((c) => Math.min(...c)))} / ${mid(computes.map((c) => Math.max(...c)))}`;
    const row = out.split('\n').find((l) => l.startsWith('2x1 patch'));
    assert.ok(row?.split(/\s{2,}/).includes(spread), `no rank compute '${spread}' in: ${row}`);

    // Every session wrote its profile; `bench profile` regroups them per row, round, rank and graph.
    const files = (await readdir(join(dir, 'profiles'))).map((f) => join(dir, 'profiles', f));
    const { out: table } = await runBench(['profile', ...files]);
    const header = table.split('\n')[0]!.split(/\s{2,}/);
    for (const g of [
      '1x1-round1-rank0-unet-sync',
      '1x2-round2-rank0-unet-sync',
      '2x1-patch-corrected_async_gn-round2-rank1-unet-sync',
      '2x1-patch-corrected_async_gn-round1-rank0-unet-async',
    ]) {
      assert.ok(header.includes(g), `no profile column ${g} in: ${header.join(' | ')}`);
    }
    const cells = (label: string) =>
      table
        .split('\n')
        .find((l) => l.startsWith(label))!
        .slice(label.length)
        .trim()
        .split(/\s+/)
        .map(Number);
    // Kernels run one after another inside a run: their time cannot exceed the run's.
    const kernels = cells('all kernels');
    const wall = cells('run (wall)');
    assert.equal(kernels.length, header.length - 1);
    for (const [i, k] of kernels.entries()) {
      assert.ok(k > 0 && k <= wall[i]! + 1, `column ${header[i + 1]}: ${k} ms of kernels in ${wall[i]} ms`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('bench patch: the row to beat has as many threads as the ranks, up to the cores', () => {
  assert.equal(toBeatThreads(2, 1, 2), 2);
  assert.equal(toBeatThreads(4, 1, 2), 2, 'four ranks on two cores race 1 x 2, not 1 x 4');
  assert.equal(toBeatThreads(4, 1, 16), 4);
  assert.equal(toBeatThreads(2, 2, 16), 4);
});

test('bench patch: flag errors name the flag', async () => {
  await assert.rejects(runBench(['patch', '--preset', 'sd3']), /--preset: expected sd15 or sdxl, got 'sd3'/);
  await assert.rejects(
    runBench(['patch', '--steps', '2', '--warmup-steps', '1']),
    /--steps 2 with --warmup-steps 1 times no asynchronous step .*give --steps >= 3/,
  );
  await assert.rejects(
    runBench(['patch', '--ranks', '0']),
    /--ranks: expected a comma-separated list of positive integers/,
  );
  await assert.rejects(runBench(['patch', '--sync-mode', 'fast']), /--sync-mode: 'fast' is not one of/);
  await assert.rejects(
    runBench(['patch', '--low-memory', 'on,maybe']),
    /--low-memory: 'maybe' is not off, on or a size in MiB/,
  );
  await assert.rejects(runBench(['unet', '--dtype', 'f8']), /--dtype: expected f32 or f16, got 'f8'/);
});

test('bench vae: table and JSON at 64x96 from a VAE config.json, split rows and baselines', {
  skip: skipWithoutFixtures,
}, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'distrifusion-bench-test-'));
  try {
    const json = join(dir, 'vae.json');
    const config = fixture('sdxl-tiny', 'vae', 'config.json');
    const args = ['vae', '--config', config, '--ranks', '1,3', '--repeats', '2', '--height', '64'];
    const { out } = await runBench([...args, '--width', '96', '--json', json]);
    for (const h of ['ms/decode', 'vs 1x1', 'exchanged/decode', 'rank compute ms (min/max)', 'peak PSS'])
      assert.ok(out.includes(h), `table lacks '${h}'`);
    const report = JSON.parse(await readFile(json, 'utf8')) as VaeBenchReport;
    assert.deepEqual([report.height, report.width], [64, 96]);
    const keys = report.rows.map((r) => r.key);
    const beat = toBeatThreads(3, 1, availableParallelism());
    assert.deepEqual(keys, ['1x1', ...(beat > 1 ? [`1x${beat}`] : []), '3x1 split']);
    for (const row of report.rows) {
      assert.ok(row.ok, row.error);
      const r = row.result!;
      assert.equal(r.decodesMs.length, 2);
      for (const [k, v] of Object.entries({ ms: r.medianMs, gflops: r.gflops, speedup: row.speedup }))
        assertFinite(`${row.key} ${k}`, v);
      assert.ok(r.flops > 0);
    }
    const split = report.rows.at(-1)!.result!;
    // Three bands exchange halos, K/V and GroupNorm statistics; one rank exchanges nothing.
    assert.ok(split.bytesPerDecode > 0 && split.computeMs!.every((ms) => ms > 0));
    assert.equal(report.rows[0]!.result!.bytesPerDecode, 0);
    await assert.rejects(runBench(['vae', '--preset', 'sd3']), /--preset: expected sd15 or sdxl, got 'sd3'/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
