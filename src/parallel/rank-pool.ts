// The host side of a patch-parallel model: spawns one worker thread per rank, computes the exchange layout
// from the patch geometry, feeds each rank its part of every step and gathers the output bands.
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import type { HostTensor } from '../graph/runner.js';
import type { EngineOptions } from '../graph/session.js';
import { type DistriConfig, isSyncStep, type RankLayout, rankLayout } from './config.js';
import { type Band, type PatchGeometry, patchGeometry } from './geometry.js';
import { createPatchHooks, type ExchangePoint, ExchangeRegistry } from './patch-hooks.js';
import { loadRankProgram, type RankProgramRef } from './program.js';
import type {
  FaultInjection,
  FromRank,
  NaiveJob,
  PatchJob,
  RankWorkerData,
  StepReport,
  ToRank,
} from './rank-worker.js';
import { ABORT_WORDS, createExchangeBuffers, type ExchangeBuffers } from './shared-exchange.js';

export interface RankPoolOptions {
  config: DistriConfig;
  program: RankProgramRef;
  /** Whether the batch holds [unconditional, conditional] halves that may be split across groups. */
  classifierFreeGuidance: boolean;
  /** Total batch of one UNet call (both CFG halves). */
  batch: number;
  latentHeight: number;
  latentWidth: number;
  fault?: FaultInjection;
  /** Engine settings for every rank (threads and device come from the config). */
  engine?: Omit<EngineOptions, 'threads' | 'device'>;
}

export interface StepStats {
  step: number;
  sync: boolean;
  ms: number;
  perRank: Array<Pick<StepReport, 'rank' | 'ms' | 'computeMs' | 'waitMs' | 'copyMs' | 'bytesPublished'>>;
}

type Split = { axis: 2 | 3; bands: Band[] };

const COMPILE_TIMEOUT_MS = 30 * 60_000;

// Under tsx (development, tests) the sources run as .ts, and workers need the tsx loader too.
const fromSource = import.meta.url.endsWith('.ts');

/** A worker running rank-worker; from sources it first registers tsx (workers do not inherit its hooks). */
function startWorker(data: RankWorkerData): Worker {
  const url = new URL(`./rank-worker.${fromSource ? 'ts' : 'js'}`, import.meta.url);
  if (!fromSource) return new Worker(url, { workerData: data });
  const boot = `import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(url.href)}); })`;
  return new Worker(boot, { eval: true, workerData: data });
}

/** Rows [start, end) of axis 2 or 3 of an NCHW tensor. */
export function sliceAxis(t: HostTensor, axis: 2 | 3, band: Band): HostTensor {
  const [n, c, h, w] = t.shape as [number, number, number, number];
  const data = t.data as Float32Array;
  const len = band.end - band.start;
  const shape = axis === 2 ? [n, c, len, w] : [n, c, h, len];
  const out = new Float32Array(n * c * (axis === 2 ? len * w : h * len));
  let at = 0;
  for (let i = 0; i < n * c; i++) {
    if (axis === 2) {
      out.set(data.subarray((i * h + band.start) * w, (i * h + band.end) * w), at);
      at += len * w;
    } else {
      for (let y = 0; y < h; y++) {
        const row = (i * h + y) * w;
        out.set(data.subarray(row + band.start, row + band.end), at);
        at += len;
      }
    }
  }
  return { data: out, shape };
}

/** Writes `part` into rows/columns `band` of `into` (NCHW). */
function placeAxis(
  into: Float32Array,
  shape: readonly number[],
  part: HostTensor,
  axis: 2 | 3,
  band: Band,
  batchOffset: number,
): void {
  const [, c, h, w] = shape as [number, number, number, number];
  const src = part.data as Float32Array;
  const [pn] = part.shape as [number];
  const len = band.end - band.start;
  let at = 0;
  for (let i = 0; i < pn * c; i++) {
    const plane = (batchOffset * c + i) * h * w;
    if (axis === 2) {
      into.set(src.subarray(at, at + len * w), plane + band.start * w);
      at += len * w;
    } else {
      for (let y = 0; y < h; y++) {
        into.set(src.subarray(at, at + len), plane + y * w + band.start);
        at += len;
      }
    }
  }
}

function batchSlice(t: HostTensor, from: number, count: number): HostTensor {
  const [b, ...rest] = t.shape as [number, ...number[]];
  const per = t.data.length / b;
  const data = t.data.subarray(from * per, (from + count) * per) as HostTensor['data'];
  return { data, shape: [count, ...rest] };
}

export class RankPool {
  readonly layout: RankLayout;
  readonly points: readonly ExchangePoint[];
  readonly stats: StepStats[] = [];
  private readonly workers: Worker[] = [];
  private pending = new Map<number, { resolve: (r: StepReport) => void; reject: (e: Error) => void }>();
  private failure: Error | undefined;
  private readonly exited = new Set<number>();
  /** Sequence number of the next step over all runs: exchange slots are told apart by it. */
  private seq = 0;
  private closed = false;
  readonly abort = new SharedArrayBuffer(ABORT_WORDS * 4);

  private constructor(
    private readonly o: RankPoolOptions,
    layout: RankLayout,
    readonly geometry: PatchGeometry | undefined,
    private readonly splits: Split[],
    points: ExchangePoint[],
    readonly outputName: string,
    readonly spatialInput: string,
  ) {
    this.layout = layout;
    this.points = points;
  }

  /** Spawns the ranks and waits until each has compiled its graphs. */
  static async launch(o: RankPoolOptions): Promise<RankPool> {
    const c = o.config;
    const layout = rankLayout(c, o.classifierFreeGuidance);
    if (layout.cfgSplit && o.batch % 2 !== 0)
      throw new Error(`RankPool: a CFG batch must be even, got ${o.batch}`);
    const batchPerRank = layout.cfgSplit ? o.batch / 2 : o.batch;
    const program = await loadRankProgram(o.program);
    const H = o.latentHeight;
    const W = o.latentWidth;
    let geometry: PatchGeometry | undefined;
    let splits: Split[] = [];
    let points: ExchangePoint[] = [];
    if (c.parallelism === 'patch') {
      geometry = patchGeometry(H, W, layout.groupSize, program.levels, `${c.height}x${c.width} image`);
      if (layout.groupSize > 1) {
        // The layout comes from the geometry: member 0's graph names every point and what each member sends.
        const registry = new ExchangeRegistry();
        const hooks = createPatchHooks({ geometry, member: 0, mode: c.mode, phase: 'sync', registry });
        program.buildGraph({ phase: 'sync', hooks, batch: batchPerRank, height: H, width: W });
        points = registry.points;
      }
      splits = [{ axis: 2, bands: geometry.bands[0]! }];
    } else {
      const rows = patchGeometry(H, W, layout.groupSize, program.levels, `${c.height}x${c.width} image`);
      const cols = patchGeometry(
        W,
        H,
        layout.groupSize,
        program.levels,
        `${c.height}x${c.width} image (columns)`,
      );
      const rowSplit: Split = { axis: 2, bands: rows.bands[0]! };
      const colSplit: Split = { axis: 3, bands: cols.bands[0]! };
      splits =
        c.splitScheme === 'row' ? [rowSplit] : c.splitScheme === 'col' ? [colSplit] : [rowSplit, colSplit];
    }
    await program.dispose?.();
    const pool = new RankPool(o, layout, geometry, splits, points, program.output, program.spatialInput);
    try {
      await pool.spawn(batchPerRank);
    } catch (e) {
      await pool.close();
      throw e;
    }
    return pool;
  }

  private groupBuffers(): ExchangeBuffers[] {
    return Array.from({ length: this.layout.groups }, () =>
      createExchangeBuffers(this.points, this.layout.groupSize),
    );
  }

  private async spawn(batchPerRank: number): Promise<void> {
    const c = this.o.config;
    const buffers = this.points.length > 0 ? this.groupBuffers() : [];
    const ready: Array<Promise<void>> = [];
    for (let rank = 0; rank < c.ranks; rank++) {
      const group = Math.floor(rank / this.layout.groupSize);
      const member = rank % this.layout.groupSize;
      let job: PatchJob | NaiveJob;
      if (c.parallelism === 'patch') {
        job = {
          kind: 'patch',
          geometry: this.geometry!,
          mode: c.mode,
          warmupSteps: c.warmupSteps,
          ...(c.lowMemory ? { kvBytesPerSegment: c.lowMemorySegmentBytes } : {}),
          batch: batchPerRank,
          height: this.o.latentHeight,
          width: this.o.latentWidth,
        };
      } else {
        job = {
          kind: 'naive',
          batch: batchPerRank,
          shapes: this.splits.map((s) => {
            const len = s.bands[member]!.end - s.bands[member]!.start;
            return s.axis === 2
              ? { height: len, width: this.o.latentWidth }
              : { height: this.o.latentHeight, width: len };
          }),
        };
      }
      const data: RankWorkerData = {
        rank,
        member,
        members: this.layout.groupSize,
        program: this.o.program,
        engine: {
          ...this.o.engine,
          ...(this.o.engine?.profilePrefix
            ? { profilePrefix: `${this.o.engine.profilePrefix}-rank${rank}` }
            : {}),
          threads: c.threadsPerRank,
          device: c.devices[rank]!,
        },
        job,
        ...(buffers.length > 0
          ? {
              exchange: {
                buffers: buffers[group]!,
                points: [...this.points],
                firstRank: group * this.layout.groupSize,
              },
            }
          : {}),
        abort: this.abort,
        timeoutMs: c.timeoutMs,
        ...(this.o.fault ? { fault: this.o.fault } : {}),
      };
      const w = startWorker(data);
      this.workers.push(w);
      ready.push(this.watch(w, rank));
    }
    // Compiling is not a wait on a peer: it gets its own, generous deadline.
    await this.withTimeout(
      Promise.all(ready),
      Math.max(c.timeoutMs, COMPILE_TIMEOUT_MS),
      'compiling the rank graphs',
    );
  }

  /** Routes a worker's messages; any error or unexpected exit fails the whole pool, naming the rank. */
  private watch(w: Worker, rank: number): Promise<void> {
    return new Promise((resolveReady, rejectReady) => {
      w.on('message', (m: FromRank) => {
        if (m.type === 'ready') resolveReady();
        else if (m.type === 'done') {
          const p = this.pending.get(m.rank);
          this.pending.delete(m.rank);
          p?.resolve(m);
        } else {
          const e = new Error(`rank ${m.rank} failed: ${m.message}`);
          this.failAll(e, m.rank);
          rejectReady(e);
        }
      });
      w.on('error', (err) => {
        const e = new Error(`rank ${rank} failed: ${err.message}`);
        this.failAll(e, rank);
        rejectReady(e);
      });
      w.on('exit', (code) => {
        this.exited.add(rank);
        if (this.closed) return;
        const e = new Error(`rank ${rank} exited unexpectedly (exit code ${code})`);
        this.failAll(e, rank);
        rejectReady(e);
      });
    });
  }

  /** Records the first failure and raises the abort word so that every rank stops waiting. */
  private failAll(e: Error, rank?: number): void {
    if (!this.failure) {
      this.failure = e;
      Atomics.compareExchange(new Int32Array(this.abort), 0, 0, rank === undefined ? -1 : rank + 1);
    }
    for (const p of this.pending.values()) p.reject(this.failure);
    this.pending.clear();
  }

  private async withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const busy = [...this.pending.keys()];
        const e = new Error(
          `timed out after ${ms} ms ${what}${busy.length ? `: rank(s) ${busy.join(', ')} did not answer` : ''}`,
        );
        this.failAll(e);
        reject(e);
      }, ms);
    });
    try {
      return await Promise.race([p, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * One UNet call across the ranks: `feeds` hold the whole batch at full size. Returns the gathered output.
   */
  async step(
    step: number,
    feeds: Readonly<Record<string, HostTensor>>,
    warmupSteps = this.o.config.warmupSteps,
  ): Promise<HostTensor> {
    if (this.failure) throw this.failure;
    if (this.closed) throw new Error('RankPool: used after close()');
    const c = this.o.config;
    const { groupSize, cfgSplit } = this.layout;
    const sync = c.parallelism === 'patch' && isSyncStep(c, step, warmupSteps);
    const split = this.splits[this.splits.length > 1 ? step % 2 : 0]!;
    const t0 = performance.now();
    const seq = this.seq++;
    const replies: Array<Promise<StepReport>> = [];
    const batchPerRank = cfgSplit ? this.o.batch / 2 : this.o.batch;
    for (let rank = 0; rank < c.ranks; rank++) {
      const group = Math.floor(rank / groupSize);
      const member = rank % groupSize;
      const rankFeeds: Record<string, HostTensor> = {};
      for (const [name, t] of Object.entries(feeds)) {
        let v = cfgSplit ? batchSlice(t, group * batchPerRank, batchPerRank) : t;
        if (c.parallelism === 'naive_patch' && name === this.spatialInput)
          v = sliceAxis(v, split.axis, split.bands[member]!);
        rankFeeds[name] = v;
      }
      replies.push(
        new Promise<StepReport>((resolve, reject) => {
          this.pending.set(rank, { resolve, reject });
          this.workers[rank]!.postMessage({
            type: 'step',
            step,
            seq,
            sync,
            warmupSteps,
            feeds: rankFeeds,
          } satisfies ToRank);
        }),
      );
    }
    const reports = await this.withTimeout(Promise.all(replies), c.timeoutMs, `waiting for step ${step}`);
    const first = reports[0]!.output;
    const shape = [this.o.batch, first.shape[1]!, this.o.latentHeight, this.o.latentWidth];
    const out = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (const r of reports) {
      const group = Math.floor(r.rank / groupSize);
      placeAxis(out, shape, r.output, split.axis, split.bands[r.rank % groupSize]!, group * batchPerRank);
    }
    this.stats.push({
      step,
      sync,
      ms: performance.now() - t0,
      perRank: reports.map((r) => ({
        rank: r.rank,
        ms: r.ms,
        computeMs: r.computeMs,
        waitMs: r.waitMs,
        copyMs: r.copyMs,
        bytesPublished: r.bytesPublished,
      })),
    });
    return { data: out, shape };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const running = this.workers.filter((_, rank) => !this.exited.has(rank));
    for (const w of running) w.postMessage({ type: 'close' } satisfies ToRank);
    // A rank stuck in a kernel cannot be joined: give the others a moment, then terminate them all.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(running.map((w) => new Promise((r) => w.once('exit', r)))),
      new Promise((r) => {
        timer = setTimeout(r, 2000);
      }),
    ]);
    clearTimeout(timer);
    await Promise.all(running.map((w) => w.terminate()));
  }
}
