// Runs one benchmark row in a child process, so that its peak RSS is its own and an out-of-memory kill ends
// only that row. The parent polls the child's high-water mark, to report memory even when the child dies.
import { fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { PatchRowResult, PatchRowSpec } from './patch-row.js';
import type { Progress, UnetRowResult, UnetRowSpec } from './unet-row.js';

export type RowTask = { kind: 'unet'; spec: UnetRowSpec } | { kind: 'patch'; spec: PatchRowSpec };

export type RowResultOf<T extends RowTask> = T extends { kind: 'unet' } ? UnetRowResult : PatchRowResult;

export type ChildMessage =
  | { type: 'progress'; message: string }
  | { type: 'result'; result: UnetRowResult | PatchRowResult; peakRssBytes: number }
  | { type: 'error'; message: string; peakRssBytes: number };

export interface RowOutcome<R> {
  result?: R;
  error?: string;
  /** The child's maxRSS at the end, or the highest VmHWM seen while it ran (when it died). */
  peakRssBytes: number;
  /**
   * The highest proportional set size sampled once a second (0 where /proc is absent). Unlike RSS it counts
   * a page once however many sessions map it: what shared weight copies really cost.
   */
  peakPssBytes: number;
}

// Under tsx (development, tests) the child runs the .ts source and needs the tsx loader.
const fromSource = import.meta.url.endsWith('.ts');

/** A `Name: N kB` field of a /proc file, in bytes; 0 where it cannot be read. */
export function procField(path: string, field: string): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(path, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

export function runIsolated<T extends RowTask>(
  task: T,
  progress: Progress,
): Promise<RowOutcome<RowResultOf<T>>> {
  const entry = fileURLToPath(new URL(`./row-child.${fromSource ? 'ts' : 'js'}`, import.meta.url));
  const child = fork(entry, [], {
    execArgv: fromSource ? ['--import', 'tsx'] : [],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  let peak = 0;
  let peakPss = 0;
  // smaps_rollup walks the page tables: once a second keeps its cost out of the measurement.
  const poll = setInterval(() => {
    if (!child.pid) return;
    peak = Math.max(peak, procField(`/proc/${child.pid}/status`, 'VmHWM'));
    peakPss = Math.max(peakPss, procField(`/proc/${child.pid}/smaps_rollup`, 'Pss'));
  }, 1000);
  return new Promise((resolve) => {
    let settled = false;
    const finish = (o: RowOutcome<RowResultOf<T>>): void => {
      if (settled) return;
      settled = true;
      clearInterval(poll);
      resolve(o);
    };
    child.on('message', (m: ChildMessage) => {
      if (m.type === 'progress') progress(m.message);
      else if (m.type === 'result') {
        finish({ result: m.result as RowResultOf<T>, peakRssBytes: m.peakRssBytes, peakPssBytes: peakPss });
      } else
        finish({ error: m.message, peakRssBytes: Math.max(peak, m.peakRssBytes), peakPssBytes: peakPss });
    });
    child.on('error', (e) =>
      finish({ error: `row process: ${e.message}`, peakRssBytes: peak, peakPssBytes: peakPss }),
    );
    child.on('exit', (code, signal) => {
      const why = signal
        ? `was killed by ${signal}${signal === 'SIGKILL' ? ' (out of memory?)' : ''}`
        : `exited with code ${code}`;
      const seen = `highest RSS seen ${(peak / 2 ** 30).toFixed(2)} GiB, PSS ${(peakPss / 2 ** 30).toFixed(2)} GiB`;
      finish({
        error: `row process ${why} before reporting; ${seen}`,
        peakRssBytes: peak,
        peakPssBytes: peakPss,
      });
    });
    child.send(task);
  });
}

/** Runs a row in a child process, or here (peak RSS is then the process's so far). */
export async function runRow<T extends RowTask>(
  task: T,
  isolate: boolean,
  progress: Progress,
): Promise<RowOutcome<RowResultOf<T>>> {
  if (isolate) return runIsolated(task, progress);
  // Imported here: the row modules load ORT and the models, which the parent of isolated rows never needs.
  const { runUnetRow } = await import('./unet-row.js');
  const { runPatchRow } = await import('./patch-row.js');
  try {
    const result = (
      task.kind === 'unet' ? await runUnetRow(task.spec, progress) : await runPatchRow(task.spec, progress)
    ) as RowResultOf<T>;
    return { result, peakRssBytes: result.peakRssBytes, peakPssBytes: 0 };
  } catch (e) {
    return {
      error: (e as Error).message,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
      peakPssBytes: 0,
    };
  }
}
