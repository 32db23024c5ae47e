// `bench vae`: the VAE decode split in row bands across ranks (DistriConfig.splitVaeDecode) against the
// single-device decode on one thread and on as many threads as the ranks use together.
import { availableParallelism } from 'node:os';
import {
  type BenchModel,
  type HostInfo,
  hostInfo,
  resolveModel,
  type WeightOptions,
} from './bench-models.js';
import { runLabelledRow } from './isolate.js';
import { toBeatThreads } from './patch-bench.js';
import {
  MEMORY_COLUMNS,
  memoryCells,
  outcomeFields,
  type RowMemory,
  reportOptions,
  type SpeedupRow,
  STATUS_COLUMN,
  setSpeedups,
  speedupCell,
  statusCell,
} from './rows.js';
import { fmt, fmtBytes, renderTable } from './table.js';
import type { Progress } from './unet-row.js';
import type { VaeRowResult, VaeRowSpec } from './vae-row.js';

export interface VaeBenchOptions {
  /** sd15, sdxl, a VAE config.json, or a VAE folder. */
  model: string;
  ranks: number[];
  threadsPerRank: number;
  height?: number;
  width?: number;
  batch: number;
  repeats: number;
  timeoutMs: number;
  /** Also run 1 rank × 1 thread and 1 rank × (max ranks · threads) to compare with (default true). */
  baselines?: boolean;
  weights: WeightOptions;
  isolate?: boolean;
}

/** Speedups are of the median decode. */
export interface VaeBenchRow extends RowMemory, SpeedupRow {
  key: string;
  spec: Omit<VaeRowSpec, 'vaeDir'>;
  result?: VaeRowResult;
}

export interface VaeBenchReport {
  bench: 'vae';
  date: string;
  host: HostInfo;
  model: string;
  height: number;
  width: number;
  options: Omit<VaeBenchOptions, 'weights'> & { weights: Omit<WeightOptions, 'cacheDir'> };
  rows: VaeBenchRow[];
}

type RowPlan = Pick<VaeBenchRow, 'key' | 'role'> & { spec: VaeRowSpec };

function planRows(o: VaeBenchOptions, base: Omit<VaeRowSpec, 'ranks' | 'threadsPerRank'>): RowPlan[] {
  const plans = new Map<string, RowPlan>();
  const add = (role: RowPlan['role'], ranks: number, threads: number) => {
    const key = ranks === 1 ? `1x${threads}` : `${ranks}x${threads} split`;
    if (!plans.has(key)) plans.set(key, { key, role, spec: { ...base, ranks, threadsPerRank: threads } });
  };
  if (o.baselines !== false) {
    add('baseline', 1, 1);
    const beat = toBeatThreads(Math.max(...o.ranks), o.threadsPerRank, availableParallelism());
    if (beat > 1) add('to-beat', 1, beat);
  }
  for (const ranks of o.ranks) add('split', ranks, o.threadsPerRank);
  return [...plans.values()];
}

export async function runVaeBench(o: VaeBenchOptions, progress: Progress): Promise<VaeBenchReport> {
  let model: BenchModel | undefined;
  try {
    model = await resolveModel(o.model, o.weights, progress, 'vae');
    const height = o.height ?? model.defaultHeight;
    const width = o.width ?? model.defaultWidth;
    const plans = planRows(o, {
      vaeDir: model.dir,
      batch: o.batch,
      height,
      width,
      repeats: o.repeats,
      timeoutMs: o.timeoutMs,
    });
    const rows: VaeBenchRow[] = [];
    for (const plan of plans) {
      const task = { kind: 'vae' as const, spec: plan.spec };
      const outcome = await runLabelledRow(plan.key, task, o.isolate ?? true, progress);
      const { vaeDir: _d, ...spec } = plan.spec;
      rows.push({ key: plan.key, role: plan.role, spec, ...outcomeFields(outcome) });
    }
    setSpeedups(rows, (r) => r.result?.medianMs);
    return {
      bench: 'vae',
      date: new Date().toISOString(),
      host: hostInfo(),
      model: model.name,
      height,
      width,
      options: reportOptions(o),
      rows,
    };
  } finally {
    await model?.cleanup();
  }
}

export function vaeTable(report: VaeBenchReport): string {
  const beat = report.rows.find((r) => r.role === 'to-beat')?.key ?? '1xN';
  return renderTable(
    [
      { header: 'ranks x threads', align: 'left' },
      { header: 'first ms' },
      { header: 'ms/decode' },
      { header: 'vs 1x1' },
      { header: `vs ${beat}` },
      { header: 'GFLOP/s' },
      { header: 'exchanged/decode' },
      { header: 'rank compute ms (min/max)' },
      { header: 'wait ms' },
      ...MEMORY_COLUMNS,
      { header: 'launch s' },
      STATUS_COLUMN,
    ],
    report.rows.map((r) => {
      const res = r.result;
      return [
        r.key,
        fmt(res?.firstMs),
        fmt(res?.medianMs),
        speedupCell(r.speedup),
        speedupCell(r.speedupOverThreads),
        fmt(res?.gflops, 1),
        res && r.spec.ranks > 1 ? fmtBytes(res.bytesPerDecode) : '-',
        res?.computeMs ? `${fmt(res.computeMs[0])} / ${fmt(res.computeMs[1])}` : '-',
        res && r.spec.ranks > 1 ? fmt(res.waitMs, 1) : '-',
        ...memoryCells(r),
        fmt(res && res.launchMs / 1000, 1),
        statusCell(r),
      ];
    }),
  );
}
