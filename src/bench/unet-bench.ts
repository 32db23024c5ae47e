// `bench unet`: whole-UNet forward time, counted FLOPs and achieved GFLOP/s per model and thread count,
// beside one large conv's rate in the same process, and the peak RSS of each row.
import {
  type BenchModel,
  type HostInfo,
  hostInfo,
  resolveModel,
  type WeightOptions,
} from './bench-models.js';
import { runLabelledRow } from './isolate.js';
import {
  MEMORY_COLUMNS,
  memoryCells,
  outcomeFields,
  type RowMemory,
  reportOptions,
  STATUS_COLUMN,
  statusCell,
} from './rows.js';
import { fmt, renderTable } from './table.js';
import type { Progress, UnetRowResult, UnetRowSpec } from './unet-row.js';

export interface UnetBenchOptions {
  /** sd15, sdxl, config.json paths or UNet folders. */
  models: string[];
  threads: number[];
  repeats: number;
  height?: number;
  width?: number;
  batch?: number;
  weights: WeightOptions;
  /** One child process per row (own peak RSS, OOM-safe). Default true. */
  isolate?: boolean;
  convReference?: boolean;
  prepacking?: boolean;
  /** EngineOptions.weights (default 'mmap'). */
  weightLoading?: 'mmap' | 'memory';
  /** ORT graph optimisation level (default 'all'). */
  optimization?: UnetRowSpec['optimization'];
}

export interface UnetBenchRow extends RowMemory {
  model: string;
  threads: number;
  batch: number;
  height: number;
  width: number;
  result?: UnetRowResult;
}

export interface UnetBenchReport {
  bench: 'unet';
  date: string;
  host: HostInfo;
  options: Omit<UnetBenchOptions, 'weights'> & { weights: Omit<WeightOptions, 'cacheDir'> };
  rows: UnetBenchRow[];
}

export async function runUnetBench(o: UnetBenchOptions, progress: Progress): Promise<UnetBenchReport> {
  const rows: UnetBenchRow[] = [];
  for (const spec of o.models) {
    let model: BenchModel | undefined;
    try {
      model = await resolveModel(spec, o.weights, progress);
      for (const threads of o.threads) {
        const row: UnetRowSpec = {
          model: model.name,
          modelDir: model.dir,
          batch: o.batch ?? model.defaultBatch ?? 1,
          height: o.height ?? model.defaultHeight,
          width: o.width ?? model.defaultWidth,
          threads,
          repeats: o.repeats,
          convReference: o.convReference ?? true,
          prepacking: o.prepacking ?? true,
          weights: o.weightLoading ?? 'mmap',
          optimization: o.optimization ?? 'all',
        };
        const label = `${row.model} ${row.height}x${row.width} batch ${row.batch}, ${threads} thread(s)`;
        const outcome = await runLabelledRow(label, { kind: 'unet', spec: row }, o.isolate ?? true, progress);
        const {
          modelDir: _dir,
          repeats: _r,
          convReference: _c,
          prepacking: _p,
          weights: _w,
          optimization: _o,
          ...key
        } = row;
        rows.push({ ...key, ...outcomeFields(outcome) });
      }
    } finally {
      await model?.cleanup();
    }
  }
  return {
    bench: 'unet',
    date: new Date().toISOString(),
    host: hostInfo(),
    options: reportOptions(o),
    rows,
  };
}

export function unetTable(report: UnetBenchReport): string {
  return renderTable(
    [
      { header: 'model' },
      { header: 'size', align: 'left' },
      { header: 'batch' },
      { header: 'threads' },
      { header: 'GFLOP' },
      { header: 'ms/forward' },
      { header: 'GFLOP/s' },
      { header: 'conv GFLOP/s' },
      { header: 'UNet/conv' },
      { header: 'compile s' },
      ...MEMORY_COLUMNS,
      STATUS_COLUMN,
    ],
    report.rows.map((r) => {
      const x = r.result;
      return [
        r.model,
        `${r.height}x${r.width}`,
        String(r.batch),
        String(r.threads),
        fmt(x && x.unet.flops / 1e9, 1),
        fmt(x?.unet.medianMs),
        fmt(x?.unet.gflops, 1),
        fmt(x?.conv?.gflops, 1),
        x?.ratioToConv === undefined ? '-' : `${(100 * x.ratioToConv).toFixed(0)}%`,
        fmt(x && x.unet.compileMs / 1000, 1),
        ...memoryCells(r),
        statusCell(r),
      ];
    }),
  );
}
