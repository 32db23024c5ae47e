// `bench profile`: ORT's per-node profiles (EngineOptions.profilePrefix, `bench patch --ort-profile`) summed
// by operator over the last run of each session, one column per graph: where a rank's time goes next to a
// single rank's, kernel by kernel.
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { fmt, renderTable } from './table.js';

interface TraceEvent {
  cat?: string;
  name?: string;
  ts?: number;
  dur?: number;
  args?: { op_name?: string };
}

/** One session's last run: its wall time and its kernels' time per operator type, in ms. */
export interface SessionProfile {
  runs: number;
  lastRunMs: number;
  opMs: Map<string, number>;
}

/** Sums the kernel time of the nodes that ran inside the session's last `model_run`. */
export function summariseSessionProfile(events: unknown, source: string): SessionProfile {
  if (!Array.isArray(events))
    throw new Error(`${source}: expected an array of trace events (an ORT profile)`);
  const runs = (events as TraceEvent[]).filter((e) => e.cat === 'Session' && e.name === 'model_run');
  const last = runs[runs.length - 1];
  const opMs = new Map<string, number>();
  if (!last || last.ts === undefined || last.dur === undefined) return { runs: 0, lastRunMs: 0, opMs };
  const end = last.ts + last.dur;
  for (const e of events as TraceEvent[]) {
    if (e.cat !== 'Node' || !e.name?.endsWith('_kernel_time') || e.ts === undefined || e.dur === undefined)
      continue;
    if (e.ts < last.ts || e.ts > end) continue;
    const op = e.args?.op_name ?? '?';
    opMs.set(op, (opMs.get(op) ?? 0) + e.dur / 1000);
  }
  return { runs: runs.length, lastRunMs: last.dur / 1000, opMs };
}

/** A profile file's group: its name without ORT's `_<date>_<time>.json` and our `-sNNN` segment suffix. */
export function profileGroup(file: string): string {
  return basename(file)
    .replace(/_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}(_\d+)?\.json$/, '')
    .replace(/-s\d{3}$/, '');
}

/** Segments of one graph add up: a group's profile is the sum of its sessions' last runs. */
export interface GroupProfile {
  group: string;
  sessions: number;
  lastRunMs: number;
  opMs: Map<string, number>;
}

export async function readProfiles(files: readonly string[]): Promise<GroupProfile[]> {
  const groups = new Map<string, GroupProfile>();
  for (const file of files) {
    let events: unknown;
    try {
      events = JSON.parse(await readFile(file, 'utf8'));
    } catch (e) {
      throw new Error(`${file}: not a readable ORT profile: ${(e as Error).message}`);
    }
    const s = summariseSessionProfile(events, file);
    const name = profileGroup(file);
    const g = groups.get(name) ?? { group: name, sessions: 0, lastRunMs: 0, opMs: new Map() };
    g.sessions += 1;
    g.lastRunMs += s.lastRunMs;
    for (const [op, ms] of s.opMs) g.opMs.set(op, (g.opMs.get(op) ?? 0) + ms);
    groups.set(name, g);
  }
  return [...groups.values()];
}

/** Operators by the most time any group spent in them, the first `top` of them, then the totals. */
export function profileTable(groups: readonly GroupProfile[], top = 24): string {
  const ops = [...new Set(groups.flatMap((g) => [...g.opMs.keys()]))].sort(
    (a, b) =>
      Math.max(...groups.map((g) => g.opMs.get(b) ?? 0)) - Math.max(...groups.map((g) => g.opMs.get(a) ?? 0)),
  );
  const total = (g: GroupProfile) => [...g.opMs.values()].reduce((a, b) => a + b, 0);
  return renderTable(
    [{ header: 'op (ms, last run)', align: 'left' }, ...groups.map((g) => ({ header: g.group }))],
    [
      ...ops.slice(0, top).map((op) => [op, ...groups.map((g) => fmt(g.opMs.get(op) ?? 0))]),
      ['all kernels', ...groups.map((g) => fmt(total(g)))],
      ['run (wall)', ...groups.map((g) => fmt(g.lastRunMs))],
      ['sessions', ...groups.map((g) => String(g.sessions))],
    ],
  );
}
