// What the rows of every bench share: their memory figures, status and speedups, and the options their
// report records.
import type { WeightOptions } from './bench-models.js';
import type { RowOutcome } from './isolate.js';
import { type Column, fmtBytes } from './table.js';

export interface RowMemory {
  ok: boolean;
  error?: string;
  peakRssBytes: number;
  /** PSS sampled between steps, while nothing computed (isolated rows only; 0 otherwise). */
  peakPssBytes: number;
  /** Peak rise of the machine's used memory during the row, shared pages once (isolated rows; else 0). */
  peakUsedBytes: number;
}

/** A row's fields from its outcome: whether it ran, why not, its memory and its result. */
export function outcomeFields<R>(outcome: RowOutcome<R>): RowMemory & { result?: R } {
  return {
    ok: outcome.result !== undefined,
    ...(outcome.error ? { error: outcome.error } : {}),
    peakRssBytes: outcome.peakRssBytes,
    peakPssBytes: outcome.peakPssBytes,
    peakUsedBytes: outcome.peakUsedBytes,
    ...(outcome.result ? { result: outcome.result } : {}),
  };
}

export const MEMORY_COLUMNS: readonly Column[] = [
  { header: 'peak RSS' },
  { header: 'peak PSS' },
  { header: 'peak used' },
];

export function memoryCells(r: RowMemory): string[] {
  return [
    fmtBytes(r.peakRssBytes),
    r.peakPssBytes > 0 ? fmtBytes(r.peakPssBytes) : '-',
    r.peakUsedBytes > 0 ? fmtBytes(r.peakUsedBytes) : '-',
  ];
}

export const STATUS_COLUMN: Column = { header: 'status', align: 'left' };

export function statusCell(r: RowMemory): string {
  return r.ok ? 'ok' : `failed: ${r.error}`;
}

export function speedupCell(v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? '-' : `${v.toFixed(2)}x`;
}

export interface SpeedupRow {
  role: 'baseline' | 'to-beat' | 'split';
  /** Over 1 rank × 1 thread, and over 1 rank × (ranks · threads). */
  speedup?: number;
  speedupOverThreads?: number;
}

/** Sets each row's speedups from `ms`, its time, over the baseline row's and the row-to-beat's. */
export function setSpeedups<R extends SpeedupRow>(rows: R[], ms: (r: R) => number | undefined): void {
  const of = (role: SpeedupRow['role']) => {
    const r = rows.find((x) => x.role === role);
    return r ? ms(r) : undefined;
  };
  const one = of('baseline');
  const beat = of('to-beat');
  for (const r of rows) {
    const own = ms(r);
    if (own === undefined) continue;
    if (one !== undefined) r.speedup = one / own;
    if (beat !== undefined) r.speedupOverThreads = beat / own;
  }
}

/** A bench's options as its report records them: the weights' seed and dtype, not where they were cached. */
export function reportOptions<O extends { weights: WeightOptions }>(
  o: O,
): Omit<O, 'weights'> & { weights: Omit<WeightOptions, 'cacheDir'> } {
  const { weights, ...rest } = o;
  return { ...rest, weights: { dtype: weights.dtype, seed: weights.seed } };
}
