// `bench patch`: DistriFusion across ranks (worker threads) against one rank, per ranks × threads,
// parallelism, sync mode and CFG split: step times, speedups, exchange volume, waits and peak RSS.
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { readJson } from '../io/diffusers-folder.js';
import { buildUNetGraph } from '../models/unet-2d-condition.js';
import { parseUNetConfig } from '../models/unet-config.js';
import type { Parallelism, SyncMode } from '../parallel/config.js';
import { latentSize } from './bench-inputs.js';
import {
  type BenchModel,
  type HostInfo,
  hostInfo,
  resolveModel,
  type WeightOptions,
} from './bench-models.js';
import { countFlops } from './flops.js';
import { type RowOutcome, runLabelledRow } from './isolate.js';
import { mergeRounds, type PatchRowResult, type PatchRowSpec } from './patch-row.js';
import { RecordingWeightStore } from './random-weights.js';
import {
  MEMORY_COLUMNS,
  memoryCells,
  type RowMemory,
  reportOptions,
  type SpeedupRow,
  STATUS_COLUMN,
  setSpeedups,
  speedupCell,
  statusCell,
} from './rows.js';
import { fmt, fmtBytes, median, renderTable } from './table.js';
import type { Progress } from './unet-row.js';

export interface PatchBenchOptions {
  /** sd15, sdxl, a config.json, or a UNet folder. */
  model: string;
  ranks: number[];
  threadsPerRank: number;
  parallelism: Parallelism[];
  modes: SyncMode[];
  splitBatch: boolean[];
  /**
   * DistriConfig.lowMemory for the patch rows: false is off, a number is on with that
   * lowMemorySegmentBytes, undefined on with its default. One row each.
   */
  lowMemory: Array<false | number | undefined>;
  height?: number;
  width?: number;
  steps: number;
  warmupSteps: number;
  prime: boolean;
  timeoutMs: number;
  shareWeights: PatchRowSpec['shareWeights'];
  nchwcWeights: boolean;
  packedGemm: boolean;
  /** Also run 1 rank × 1 thread and 1 rank × (max ranks · threads) to compare with (default true). */
  baselines?: boolean;
  weights: WeightOptions;
  isolate?: boolean;
  /**
   * Run the whole list of rows this many times, one row after another, and summarise each row over the
   * steps of all its runs (default 1): on a noisy machine a slow spell then falls on every row alike.
   */
  rounds?: number;
  /** Write ORT's per-node profiles here, named by row, round, rank, graph and segment. */
  ortProfileDir?: string;
}

/** Speedups are of the asynchronous step. */
export interface PatchBenchRow extends RowMemory, SpeedupRow {
  key: string;
  /** FLOPs of one step (whole image, whole batch) over the async step time. */
  gflops?: number;
  spec: Omit<PatchRowSpec, 'modelDir'>;
  result?: PatchRowResult;
}

export interface PatchBenchReport {
  bench: 'patch';
  date: string;
  host: HostInfo;
  model: string;
  height: number;
  width: number;
  flopsPerStep: number;
  options: Omit<PatchBenchOptions, 'weights'> & { weights: Omit<WeightOptions, 'cacheDir'> };
  rows: PatchBenchRow[];
}

type RowPlan = Pick<PatchBenchRow, 'key' | 'role'> & { spec: PatchRowSpec };

/**
 * The threads of the row to beat: one rank with as many threads as the ranks use together, but no more than
 * the cores. Ranks beyond the cores take turns on them, while intra-op threads beyond the cores spin against
 * each other: 1 x 4 on two cores measures that spinning, not what two cores can do.
 */
export function toBeatThreads(ranks: number, threadsPerRank: number, cores: number): number {
  return Math.min(ranks * threadsPerRank, cores);
}

/** The rows: 1×1, the row to beat (toBeatThreads), then every multi-rank combination (deduplicated). */
function planRows(
  o: PatchBenchOptions,
  base: Omit<
    PatchRowSpec,
    'ranks' | 'threadsPerRank' | 'parallelism' | 'mode' | 'splitBatch' | 'lowMemory' | 'lowMemorySegmentBytes'
  >,
): RowPlan[] {
  const plans = new Map<string, RowPlan>();
  const add = (
    role: RowPlan['role'],
    ranks: number,
    threads: number,
    parallelism: Parallelism,
    mode: SyncMode,
    splitBatch: boolean,
    lowMemory: false | number | undefined,
  ) => {
    // With one rank, or an odd count, some settings change nothing: key rows by what they run.
    const cfgSplit = splitBatch && ranks % 2 === 0;
    const groupSize = cfgSplit ? ranks / 2 : ranks;
    // Low memory changes only the asynchronous graph of patch groups (more than one rank per group).
    const lowMem = lowMemory !== false && parallelism === 'patch' && groupSize > 1;
    const segmentBytes = lowMem ? lowMemory : undefined;
    const key =
      ranks === 1
        ? `1x${threads}`
        : `${ranks}x${threads} ${groupSize === 1 ? 'cfg-split' : parallelism}${groupSize > 1 && parallelism === 'patch' ? ` ${mode}` : ''}${
            cfgSplit && groupSize > 1 ? ' +cfg-split' : ''
          }${lowMem ? ' low-memory' : ''}${segmentBytes !== undefined ? ` ${fmtBytes(segmentBytes)}` : ''}`;
    if (plans.has(key)) return;
    plans.set(key, {
      key,
      role,
      spec: {
        ...base,
        ranks,
        threadsPerRank: threads,
        parallelism,
        mode,
        splitBatch,
        lowMemory: lowMem,
        ...(segmentBytes !== undefined ? { lowMemorySegmentBytes: segmentBytes } : {}),
      },
    });
  };
  const mode = o.modes[0]!;
  const beat = toBeatThreads(Math.max(...o.ranks), o.threadsPerRank, availableParallelism());
  if (o.baselines !== false) {
    add('baseline', 1, 1, 'patch', mode, false, false);
    if (beat > 1) add('to-beat', 1, beat, 'patch', mode, false, false);
  }
  for (const ranks of o.ranks) {
    for (const parallelism of o.parallelism) {
      for (const m of parallelism === 'patch' ? o.modes : [mode]) {
        for (const sb of o.splitBatch) {
          for (const lm of o.lowMemory) add('split', ranks, o.threadsPerRank, parallelism, m, sb, lm);
        }
      }
    }
  }
  return [...plans.values()];
}

/** FLOPs of one UNet call for the whole image and batch (what every split computes, some of it twice). */
async function flopsPerStep(modelDir: string, batch: number, height: number, width: number): Promise<number> {
  const path = join(modelDir, 'config.json');
  const config = parseUNetConfig(await readJson(path), path);
  const [h, w] = latentSize(height, width);
  const f = countFlops(
    buildUNetGraph(config, new RecordingWeightStore(path), { batch, height: h, width: w }),
  );
  // Steps keep the text conditioning: the ranks reuse its invariant prologue after the first step.
  return f.total - f.invariant;
}

export async function runPatchBench(o: PatchBenchOptions, progress: Progress): Promise<PatchBenchReport> {
  let model: BenchModel | undefined;
  try {
    model = await resolveModel(o.model, o.weights, progress);
    const height = o.height ?? model.defaultHeight;
    const width = o.width ?? model.defaultWidth;
    const base = {
      model: model.name,
      modelDir: model.dir,
      height,
      width,
      batch: 2,
      steps: o.steps,
      warmupSteps: o.warmupSteps,
      prime: o.prime,
      timeoutMs: o.timeoutMs,
      shareWeights: o.shareWeights,
      nchwcWeights: o.nchwcWeights,
      packedGemm: o.packedGemm,
    };
    const flops = await flopsPerStep(model.dir, base.batch, height, width);
    const plans = planRows(o, base);
    const rounds = o.rounds ?? 1; // the CLI checked it is an integer >= 1
    const outcomes: RowOutcome<PatchRowResult>[][] = plans.map(() => []);
    for (let round = 1; round <= rounds; round++) {
      for (const [i, plan] of plans.entries()) {
        const profile = o.ortProfileDir
          ? {
              ortProfilePrefix: join(
                o.ortProfileDir,
                `${plan.key.replaceAll(' ', '-')}${rounds > 1 ? `-round${round}` : ''}`,
              ),
            }
          : {};
        const outcome = await runLabelledRow(
          `${plan.key}${rounds > 1 ? ` (round ${round}/${rounds})` : ''}`,
          { kind: 'patch', spec: { ...plan.spec, ...profile } },
          o.isolate ?? true,
          progress,
        );
        outcomes[i]!.push(outcome);
      }
    }
    const rows: PatchBenchRow[] = plans.map((plan, i) => {
      const runs = outcomes[i]!;
      const results = runs.flatMap((r) => (r.result ? [r.result] : []));
      const error = runs.find((r) => r.error)?.error;
      const result = results.length > 0 ? mergeRounds(results) : undefined;
      const { modelDir: _d, ...spec } = plan.spec;
      return {
        key: plan.key,
        role: plan.role,
        ok: error === undefined && result !== undefined,
        ...(error ? { error } : {}),
        peakRssBytes: Math.max(...runs.map((r) => r.peakRssBytes)),
        peakPssBytes: Math.max(...runs.map((r) => r.peakPssBytes)),
        peakUsedBytes: Math.max(...runs.map((r) => r.peakUsedBytes)),
        spec,
        ...(result ? { result, gflops: flops / result.async.ms / 1e6 } : {}),
      };
    });
    setSpeedups(rows, (r) => r.result?.async.ms);
    return {
      bench: 'patch',
      date: new Date().toISOString(),
      host: hostInfo(),
      model: model.name,
      height,
      width,
      flopsPerStep: flops,
      options: reportOptions(o),
      rows,
    };
  } finally {
    await model?.cleanup();
  }
}

export function patchTable(report: PatchBenchReport): string {
  const beat = report.rows.find((r) => r.role === 'to-beat')?.key.split(' ')[0] ?? '1xN';
  return renderTable(
    [
      { header: 'ranks x threads', align: 'left' },
      { header: 'weights', align: 'left' },
      { header: 'warmup ms' },
      { header: 'async ms' },
      { header: 'vs 1x1' },
      { header: `vs ${beat}` },
      { header: 'GFLOP/s' },
      { header: 'exchanged/step' },
      { header: 'rank compute ms (min/max)' },
      { header: 'wait ms (warmup/async)' },
      { header: 'copy ms (warmup/async)' },
      ...MEMORY_COLUMNS,
      { header: 'launch s' },
      STATUS_COLUMN,
    ],
    report.rows.map((r) => {
      const res = r.result;
      return [
        r.key,
        res ? weightsLabel(res) : '-',
        fmt(res?.warmup.ms),
        fmt(res?.async.ms),
        speedupCell(r.speedup),
        speedupCell(r.speedupOverThreads),
        fmt(r.gflops, 1),
        res ? fmtBytes(res.async.steps > 0 ? res.async.bytesPerStep : res.warmup.bytesPerStep) : '-',
        res ? rankComputeSpread(res) : '-',
        res ? `${fmt(res.warmup.waitMs, 1)} / ${fmt(res.async.waitMs, 1)}` : '-',
        res ? `${fmt(res.warmup.copyMs, 1)} / ${fmt(res.async.copyMs, 1)}` : '-',
        ...memoryCells(r),
        fmt(res && res.launchMs / 1000, 1),
        statusCell(r),
      ];
    }),
  );
}

/**
 * Medians over the asynchronous steps of the fastest and the slowest rank's compute time. A step ends with its
 * slowest rank, so the gap is time the faster ranks sat idle.
 */
function rankComputeSpread(r: PatchRowResult): string {
  const steps = r.steps.filter((s) => s.phase === 'async' && s.perRank.length > 0);
  if (steps.length === 0 || r.ranks < 2) return '-';
  const compute = (s: PatchRowResult['steps'][number]) => s.perRank.map((p) => p.computeMs);
  const lo = median(steps.map((s) => Math.min(...compute(s))));
  const hi = median(steps.map((s) => Math.max(...compute(s))));
  return `${fmt(lo)} / ${fmt(hi)}`;
}

/** How a row's ranks held the weights: 'own', or 'shared' with the layouts the shared copy was stored in. */
function weightsLabel(r: PatchRowResult): string {
  if (!r.sharedWeights) return 'own';
  return ['shared', r.nchwcBlock ? `nchwc${r.nchwcBlock}` : '', r.packedGemm ? 'packed' : '']
    .filter(Boolean)
    .join(' ');
}
