// One rank: a worker thread with its own ORT sessions. It compiles its graphs once (sync and async phase),
// then runs one denoising step per message, exchanging with its peers through shared memory.
import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import type { GraphBuilder } from '../graph/builder.js';
import { BufferPool, CompiledGraph, type HostTensor } from '../graph/runner.js';
import type { EngineOptions } from '../graph/session.js';
import type { SyncMode } from './config.js';
import type { PatchGeometry } from './geometry.js';
import { PatchAssembler } from './patch-assembly.js';
import { createPatchHooks, type ExchangePoint, ExchangeRegistry, type Phase } from './patch-hooks.js';
import { loadRankProgram, type RankProgram, type RankProgramRef } from './program.js';
import { type ExchangeBuffers, SharedExchange } from './shared-exchange.js';

export interface PatchJob {
  kind: 'patch';
  geometry: PatchGeometry;
  mode: SyncMode;
  warmupSteps: number;
  /** DistriConfig.lowMemory: the asynchronous graph is cut at self-attentions, segments of this much K/V. */
  kvBytesPerSegment?: number;
  batch: number;
  height: number;
  width: number;
}

export interface NaiveJob {
  kind: 'naive';
  batch: number;
  /** The band shape per orientation: one for row/col, two for alternate (row on even steps). */
  shapes: Array<{ height: number; width: number }>;
}

/** Test hook: make one rank fail at a step, to check that every rank stops with a clear error. */
export interface FaultInjection {
  rank: number;
  step: number;
  kind: 'throw' | 'exit' | 'hang';
}

export interface RankWorkerData {
  rank: number;
  member: number;
  members: number;
  program: RankProgramRef;
  engine: EngineOptions;
  job: PatchJob | NaiveJob;
  exchange?: { buffers: ExchangeBuffers; points: ExchangePoint[]; firstRank: number };
  abort: SharedArrayBuffer;
  timeoutMs: number;
  fault?: FaultInjection;
}

export type ToRank =
  | {
      type: 'step';
      step: number;
      seq: number;
      sync: boolean;
      warmupSteps: number;
      feeds: Record<string, HostTensor>;
    }
  | { type: 'close' };

export interface StepReport {
  type: 'done';
  rank: number;
  step: number;
  output: HostTensor;
  /** Whole step on this rank; time inside session.run; blocked on peers; copying exchange data. */
  ms: number;
  computeMs: number;
  waitMs: number;
  copyMs: number;
  bytesPublished: number;
}

export type FromRank =
  | { type: 'ready'; rank: number; compileMs: number; segments: number[] }
  | StepReport
  | { type: 'error'; rank: number; message: string; stack?: string };

const d = workerData as RankWorkerData;
const port = parentPort!;

function fail(e: unknown): void {
  const err = e instanceof Error ? e : new Error(String(e));
  const abort = new Int32Array(d.abort);
  Atomics.compareExchange(abort, 0, 0, d.rank + 1);
  port.postMessage({
    type: 'error',
    rank: d.rank,
    message: err.message,
    stack: err.stack,
  } satisfies FromRank);
}

interface Compiled {
  graphs: Map<string, CompiledGraph>;
  assembler?: PatchAssembler;
  exchange?: SharedExchange;
  program: RankProgram;
}

async function compile(): Promise<Compiled> {
  const program = await loadRankProgram(d.program);
  const graphs = new Map<string, CompiledGraph>();
  const engine = d.engine;
  // One pool for the rank's graphs: buffers of the synchronous steps serve the asynchronous ones.
  const pool = new BufferPool();
  const add = async (key: string, b: GraphBuilder) =>
    graphs.set(key, await CompiledGraph.fromBuilder(b, engine, pool));
  const job = d.job;
  if (job.kind === 'naive') {
    for (const [i, s] of job.shapes.entries()) {
      await add(
        `naive${i}`,
        program.buildGraph({ phase: 'sync', batch: job.batch, height: s.height, width: s.width }),
      );
    }
    return { graphs, program };
  }
  const spec = { batch: job.batch, height: job.height, width: job.width };
  if (!d.exchange) {
    await add('sync', program.buildGraph({ phase: 'sync', ...spec }));
    return { graphs, program };
  }
  const registry = new ExchangeRegistry();
  for (const p of d.exchange.points) registry.add(p);
  const phases: Phase[] = job.mode === 'full_sync' ? ['sync'] : ['sync', 'async'];
  for (const phase of phases) {
    const hooks = createPatchHooks({
      geometry: job.geometry,
      member: d.member,
      mode: job.mode,
      phase,
      registry,
      ...(job.kvBytesPerSegment !== undefined ? { kvBytesPerSegment: job.kvBytesPerSegment } : {}),
    });
    await add(phase, program.buildGraph({ phase, hooks, ...spec }));
  }
  if (registry.points.length !== d.exchange.points.length) {
    throw new Error(
      `rank ${d.rank}: its graph has ${registry.points.length} exchange points, the layout ${d.exchange.points.length}`,
    );
  }
  const firstRank = d.exchange.firstRank;
  const exchange = new SharedExchange({
    points: d.exchange.points,
    members: d.members,
    member: d.member,
    buffers: d.exchange.buffers,
    abort: d.abort,
    timeoutMs: d.timeoutMs,
    rankOf: (m) => firstRank + m,
  });
  exchange.faultInOwnSlots();
  const assembler = new PatchAssembler({
    exchange,
    points: d.exchange.points,
    member: d.member,
    members: d.members,
    mode: job.mode,
    warmupSteps: job.warmupSteps,
    staleInputs: (graphs.get('async')?.plan.inputs ?? [])
      .map((i) => i.name)
      .filter((name) => name.startsWith('stale:')),
  });
  return { graphs, assembler, exchange, program };
}

function injectFault(step: number): void {
  const f = d.fault;
  if (!f || f.rank !== d.rank || f.step !== step) return;
  if (f.kind === 'throw') throw new Error(`injected failure at step ${step}`);
  if (f.kind === 'exit') process.exit(3);
  // hang: block this thread for good, as a rank stuck in a kernel would
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
}

async function runStep(c: Compiled, m: Extract<ToRank, { type: 'step' }>): Promise<StepReport> {
  const { step, sync, feeds } = m;
  injectFault(step);
  const t0 = performance.now();
  const job = d.job;
  let key: string;
  if (job.kind === 'naive') key = `naive${job.shapes.length > 1 ? step % 2 : 0}`;
  else key = c.graphs.has('async') && !sync ? 'async' : 'sync';
  const graph = c.graphs.get(key)!;
  const ex = c.exchange;
  if (ex) {
    ex.checkAbort();
    ex.waitMs = 0;
    ex.bytesPublished = 0;
  }
  const a = c.assembler;
  a?.begin(step, m.seq, m.warmupSteps, key === 'async');
  const outputName = c.program.output;
  // Time in exchange callbacks = waiting for peers + copying into and out of shared memory.
  let exchangeMs = 0;
  const timed = <T>(f: () => T): T => {
    const s = performance.now();
    try {
      return f();
    } finally {
      exchangeMs += performance.now() - s;
    }
  };
  const computeBefore = graph.segmentMs.reduce((x, y) => x + y, 0);
  const out = await graph.run(
    feeds,
    a
      ? {
          exchange: (marker, locals, into) => timed(() => a.exchangeSync(marker, locals, into)),
          input: (info, into) => timed(() => a.staleInput(info.name, into)),
          onOutput: (name, t) => name !== outputName && timed(() => a.publishFresh(name, t)),
        }
      : {},
  );
  const output = out[outputName];
  if (!output) throw new Error(`rank ${d.rank}: the graph produced no '${outputName}'`);
  return {
    type: 'done',
    rank: d.rank,
    step,
    output,
    ms: performance.now() - t0,
    computeMs: graph.segmentMs.reduce((x, y) => x + y, 0) - computeBefore,
    waitMs: ex?.waitMs ?? 0,
    copyMs: exchangeMs - (ex?.waitMs ?? 0),
    bytesPublished: ex?.bytesPublished ?? 0,
  };
}

async function main(): Promise<void> {
  const t0 = performance.now();
  const c = await compile();
  port.postMessage({
    type: 'ready',
    rank: d.rank,
    compileMs: performance.now() - t0,
    segments: [...c.graphs.values()].map((g) => g.segmentCount),
  } satisfies FromRank);
  let queue = Promise.resolve();
  port.on('message', (m: ToRank) => {
    queue = queue.then(async () => {
      if (m.type === 'close') {
        for (const g of c.graphs.values()) await g.dispose();
        await c.program.dispose?.();
        port.close();
        return;
      }
      try {
        const report = await runStep(c, m);
        port.postMessage(report, [report.output.data.buffer as ArrayBuffer]);
      } catch (e) {
        fail(e);
      }
    });
  });
}

main().catch(fail);
