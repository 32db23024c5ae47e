// Runs one benchmark row in a child process, so that its peak RSS is its own and an out-of-memory kill ends
// only that row. The parent polls the child's high-water mark and the machine's used memory, to report
// memory even when the child dies. It never reads the child's smaps_rollup while ranks compute: that walk of
// the page tables costs about 0.55 s of a core per 26 GB mapped, which, polled every second during a step,
// took a core from two SDXL ranks (async steps 89 s instead of 52 s at 768²).
import { fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { PatchRowResult, PatchRowSpec } from './patch-row.js';
import type { Progress, UnetRowResult, UnetRowSpec } from './unet-row.js';
import type { VaeRowResult, VaeRowSpec } from './vae-row.js';

export type RowTask =
  | { kind: 'unet'; spec: UnetRowSpec }
  | { kind: 'patch'; spec: PatchRowSpec }
  | { kind: 'vae'; spec: VaeRowSpec };

export type RowResultOf<T extends RowTask> = T extends { kind: 'unet' }
  ? UnetRowResult
  : T extends { kind: 'vae' }
    ? VaeRowResult
    : PatchRowResult;

export type ChildMessage =
  | { type: 'progress'; message: string }
  | { type: 'pss'; bytes: number }
  | { type: 'result'; result: UnetRowResult | PatchRowResult | VaeRowResult; peakRssBytes: number }
  | { type: 'error'; message: string; peakRssBytes: number };

export interface RowOutcome<R> {
  result?: R;
  error?: string;
  /** The child's maxRSS at the end, or the highest VmHWM seen while it ran (when it died). */
  peakRssBytes: number;
  /**
   * The highest proportional set size the row sampled between steps, while no rank computed (0 where /proc
   * is absent). Unlike RSS it counts a page once however many sessions map it.
   */
  peakPssBytes: number;
  /**
   * The highest rise of the machine's used memory (MemTotal - MemAvailable) over its level before the row,
   * sampled once a second: shared pages count once, and peaks inside a step are seen (0 without /proc).
   */
  peakUsedBytes: number;
}

// Under tsx (development, tests) the child runs the .ts source and needs the tsx loader.
const fromSource = import.meta.url.endsWith('.ts');

/** The machine's used memory, MemTotal - MemAvailable (page cache that can be dropped is not used). */
function machineUsedBytes(): number {
  const total = procField('/proc/meminfo', 'MemTotal');
  return total > 0 ? total - procField('/proc/meminfo', 'MemAvailable') : 0;
}

/**
 * This process's PSS, reported to the parent when this is a row child. Call it only between steps: reading
 * smaps_rollup walks every page table of the process.
 */
export function sampleProcessPss(): number {
  const pss = procField('/proc/self/smaps_rollup', 'Pss');
  if (pss > 0 && process.send) process.send({ type: 'pss', bytes: pss } satisfies ChildMessage);
  return pss;
}

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
  const baseline = machineUsedBytes();
  let peakUsed = 0;
  const memory = () => ({ peakRssBytes: peak, peakPssBytes: peakPss, peakUsedBytes: peakUsed });
  // Both reads are counters, not page-table walks.
  const poll = setInterval(() => {
    if (!child.pid) return;
    peak = Math.max(peak, procField(`/proc/${child.pid}/status`, 'VmHWM'));
    if (baseline > 0) peakUsed = Math.max(peakUsed, machineUsedBytes() - baseline);
  }, 1000);
  return new Promise((resolve) => {
    let settled = false;
    const finish = (o: RowOutcome<RowResultOf<T>>): void => {
      if (settled) return;
      settled = true;
      clearInterval(poll);
      resolve(o);
    };
    // The outcome is handed on when the child has exited, not when it reports: until then it still holds
    // its memory, which the next row would otherwise count in its starting level of used memory.
    let reported: RowOutcome<RowResultOf<T>> | undefined;
    child.on('message', (m: ChildMessage) => {
      if (m.type === 'progress') progress(m.message);
      else if (m.type === 'pss') peakPss = Math.max(peakPss, m.bytes);
      else if (m.type === 'result') {
        reported = { result: m.result as RowResultOf<T>, ...memory(), peakRssBytes: m.peakRssBytes };
      } else reported = { error: m.message, ...memory(), peakRssBytes: Math.max(peak, m.peakRssBytes) };
    });
    child.on('error', (e) => finish({ error: `row process: ${e.message}`, ...memory() }));
    child.on('exit', (code, signal) => {
      if (reported) return finish(reported);
      const why = signal
        ? `was killed by ${signal}${signal === 'SIGKILL' ? ' (out of memory?)' : ''}`
        : `exited with code ${code}`;
      const gib = (n: number) => `${(n / 2 ** 30).toFixed(2)} GiB`;
      const seen = `highest RSS seen ${gib(peak)}, memory used ${gib(peakUsed)} (PSS between steps ${gib(peakPss)})`;
      finish({ error: `row process ${why} before reporting; ${seen}`, ...memory() });
    });
    child.send(task);
  });
}

/** Runs a row in this process. The row modules load ORT and the models, which the parent of isolated rows never needs. */
export async function runRowTask(task: RowTask, progress: Progress): Promise<RowResultOf<RowTask>> {
  if (task.kind === 'unet') return (await import('./unet-row.js')).runUnetRow(task.spec, progress);
  if (task.kind === 'vae') return (await import('./vae-row.js')).runVaeRow(task.spec, progress);
  return (await import('./patch-row.js')).runPatchRow(task.spec, progress);
}

/** runRow with its progress lines prefixed by `label`, and a line when it starts and when it fails. */
export async function runLabelledRow<T extends RowTask>(
  label: string,
  task: T,
  isolate: boolean,
  progress: Progress,
): Promise<RowOutcome<RowResultOf<T>>> {
  const log = (m: string) => progress(`${label}: ${m}`);
  log('starting');
  const outcome = await runRow(task, isolate, log);
  if (outcome.error) log(`FAILED: ${outcome.error}`);
  return outcome;
}

/** Runs a row in a child process, or here (peak RSS is then the process's so far). */
export async function runRow<T extends RowTask>(
  task: T,
  isolate: boolean,
  progress: Progress,
): Promise<RowOutcome<RowResultOf<T>>> {
  if (isolate) return runIsolated(task, progress);
  try {
    const result = (await runRowTask(task, progress)) as RowResultOf<T>;
    return { result, peakRssBytes: result.peakRssBytes, peakPssBytes: 0, peakUsedBytes: 0 };
  } catch (e) {
    return {
      error: (e as Error).message,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
      peakPssBytes: 0,
      peakUsedBytes: 0,
    };
  }
}
