import { performance } from 'node:perf_hooks';
import ort from 'onnxruntime-node';
import type { ExchangeMarker, GraphBuilder } from './builder.js';
import type { DType } from './dtype.js';
import type { OnnxValueInfo } from './onnx-model.js';
import { type GraphPlan, planSegments, type SegmentPlan } from './segments.js';
import { createSession, type EngineOptions } from './session.js';

export type HostData = Float32Array | BigInt64Array;

export interface HostTensor {
  data: HostData;
  shape: readonly number[];
}

export interface RunHooks {
  /**
   * Supplies a graph input missing from the feeds, right before the segment ahead of the first segment that
   * reads it. `into` is a buffer of the input's size from the graph's pool: filling and returning it lets
   * the buffer go back to the pool after the input's last reader.
   */
  input?(info: OnnxValueInfo, into: HostTensor): HostTensor;
  /**
   * Called at each exchange point with this rank's local tensors; returns the assembled inputs. `into`
   * holds pooled buffers of the assembled shapes, to be filled and returned (or ignored).
   */
  exchange?(
    marker: ExchangeMarker,
    locals: HostTensor[],
    into: HostTensor[],
  ): Promise<HostTensor[]> | HostTensor[];
  /**
   * Called as soon as the segment that makes a graph output finishes. Return true when the data has been
   * consumed (copied): the buffer is then reused and the output is left out of run()'s result.
   */
  onOutput?(name: string, t: HostTensor): boolean;
}

interface CompiledSegment {
  plan: SegmentPlan;
  session: ort.InferenceSession | undefined;
}

/** Above this many segments, sessions run without ORT's per-session memory arena (see EngineOptions). */
const MANY_SEGMENTS = 4;

function allocate(dtype: DType, n: number): HostData {
  if (dtype === 'float32') return new Float32Array(n);
  if (dtype === 'int64') return new BigInt64Array(n);
  throw new Error(`runner: cannot hold a ${dtype} tensor between segments`);
}

function count(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Reuses activation buffers between segments (same sizes recur through a UNet). Graphs of one rank can
 * share a pool: what the synchronous graph held then serves the asynchronous one.
 */
export class BufferPool {
  private free = new Map<string, HostData[]>();

  take(v: OnnxValueInfo): HostData {
    const key = `${v.dtype}:${count(v.shape)}`;
    return this.free.get(key)?.pop() ?? allocate(v.dtype, count(v.shape));
  }

  give(data: HostData): void {
    const key = `${data instanceof Float32Array ? 'float32' : 'int64'}:${data.length}`;
    const list = this.free.get(key) ?? [];
    list.push(data);
    this.free.set(key, list);
  }
}

function toOrt(t: HostTensor): ort.Tensor {
  return t.data instanceof Float32Array
    ? new ort.Tensor('float32', t.data, t.shape as number[])
    : new ort.Tensor('int64', t.data, t.shape as number[]);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * A graph compiled into one ORT session per segment. run() feeds graph inputs, carries tensors between
 * segments, and calls the exchange hook at each cut.
 */
export class CompiledGraph {
  /** Accumulated milliseconds per segment (session.run only). */
  readonly segmentMs: number[];
  private prologue: { inputs: Map<string, HostData>; outputs: Map<string, HostTensor> } | undefined;

  private constructor(
    readonly plan: GraphPlan,
    private readonly segments: CompiledSegment[],
    private readonly pool: BufferPool,
  ) {
    this.segmentMs = segments.map(() => 0);
  }

  static async compile(
    plan: GraphPlan,
    opts: EngineOptions = {},
    pool = new BufferPool(),
  ): Promise<CompiledGraph> {
    const segments: CompiledSegment[] = [];
    const many = plan.segments.length > MANY_SEGMENTS;
    const engine: EngineOptions = { ...opts, memoryArena: opts.memoryArena ?? !many };
    for (const p of plan.segments) {
      // One profile per session: named by graph and segment, so that `bench profile` can regroup them.
      const profiled = opts.profilePrefix
        ? {
            ...engine,
            profilePrefix: `${opts.profilePrefix}-${plan.name}-s${String(p.index).padStart(3, '0')}`,
          }
        : engine;
      const session =
        p.graph.nodes.length > 0 ? await createSession(p.graph, p.weights, profiled) : undefined;
      segments.push({ plan: p, session });
    }
    return new CompiledGraph(plan, segments, pool);
  }

  static async fromBuilder(
    b: GraphBuilder,
    opts: EngineOptions = {},
    pool?: BufferPool,
  ): Promise<CompiledGraph> {
    return CompiledGraph.compile(planSegments(b), opts, pool);
  }

  get segmentCount(): number {
    return this.segments.length;
  }

  async run(
    feeds: Readonly<Record<string, HostTensor>>,
    hooks: RunHooks = {},
  ): Promise<Record<string, HostTensor>> {
    const check = (i: OnnxValueInfo, f: HostTensor | undefined): HostTensor => {
      if (!f) throw new Error(`graph ${this.plan.name}: missing input '${i.name}' [${i.shape.join(', ')}]`);
      if (!sameShape(f.shape, i.shape)) {
        throw new Error(
          `graph ${this.plan.name}: input '${i.name}' must have shape [${i.shape.join(', ')}], got [${f.shape.join(', ')}]`,
        );
      }
      if (f.data.length !== count(f.shape)) {
        throw new Error(
          `graph ${this.plan.name}: input '${i.name}' holds ${f.data.length} values for shape [${f.shape.join(', ')}]`,
        );
      }
      return f;
    };
    for (const i of this.plan.inputs) if (!hooks.input || feeds[i.name]) check(i, feeds[i.name]);
    const extra = Object.keys(feeds).filter((k) => !this.plan.inputs.some((i) => i.name === k));
    if (extra.length > 0) throw new Error(`graph ${this.plan.name}: unknown input(s) ${extra.join(', ')}`);

    const values = new Map<string, HostTensor>();
    const pooled = new Set<string>();
    const graphOutputs = new Set(this.plan.outputs.map((o) => o.name));
    const result: Record<string, HostTensor> = {};
    const lastUse = this.plan.lastUse;
    const release = (name: string, at: number): void => {
      if ((lastUse.get(name) ?? -1) > at) return;
      const v = values.get(name);
      if (v && pooled.has(name)) {
        this.pool.give(v.data);
        pooled.delete(name);
      }
      values.delete(name);
    };

    // Hook-supplied inputs are taken one segment ahead: a peer's stale data is then copied out a whole
    // segment before this rank's fresh data of the same point (made by the segment before the one that
    // reads the stale data) is published over it, so that publishing does not wait on the peer.
    const supply = (p: SegmentPlan): void => {
      const input = hooks.input;
      if (!input) return;
      for (const i of p.inputs) {
        if (i.source !== 'graph-input' || feeds[i.name] || values.has(i.name)) continue;
        const into = { data: this.pool.take(i), shape: i.shape };
        const v = check(i, input(i, into));
        if (v.data === into.data) pooled.add(i.name);
        else this.pool.give(into.data);
        values.set(i.name, v);
      }
    };

    for (const [index, seg] of this.segments.entries()) {
      const p = seg.plan;
      if (p.invariant && seg.session) {
        const cached = await this.runPrologue(seg.session, p, feeds);
        for (const [name, t] of cached) {
          values.set(name, t);
          if (graphOutputs.has(name)) result[name] = { data: t.data.slice(), shape: t.shape };
        }
        continue;
      }
      if (seg.session) {
        supply(p);
        const next = this.segments[index + 1];
        if (next?.session && !next.plan.invariant) supply(next.plan);
        const ortFeeds: Record<string, ort.Tensor> = {};
        for (const i of p.inputs) {
          let v = i.source === 'graph-input' ? feeds[i.name] : undefined;
          v ??= values.get(i.name);
          if (!v)
            throw new Error(
              `graph ${this.plan.name}: segment ${p.index} (${p.path}) lacks input '${i.name}'`,
            );
          ortFeeds[i.name] = toOrt(v);
        }
        const fetches: Record<string, ort.Tensor> = {};
        const made: Array<[string, HostTensor]> = [];
        for (const o of p.outputs) {
          const keep = graphOutputs.has(o.name) && !hooks.onOutput;
          const data = keep ? allocate(o.dtype, count(o.shape)) : this.pool.take(o);
          const t = { data, shape: o.shape };
          made.push([o.name, t]);
          fetches[o.name] = toOrt(t);
        }
        const t0 = performance.now();
        await seg.session.run(ortFeeds, fetches);
        this.segmentMs[p.index]! += performance.now() - t0;
        for (const [name, t] of made) {
          values.set(name, t);
          if (!(graphOutputs.has(name) && !hooks.onOutput)) pooled.add(name);
          if (!graphOutputs.has(name) || hooks.onOutput?.(name, t)) continue;
          // The caller keeps it: hand over a copy when the buffer belongs to the pool.
          result[name] = pooled.has(name) ? { data: t.data.slice(), shape: t.shape } : t;
        }
        // Feeds are never in `values`: this frees intermediates and hook-supplied inputs only.
        for (const i of p.inputs) release(i.name, p.index);
        for (const [name] of made) if (!lastUse.has(name)) release(name, p.index);
      }
      if (p.exchange) {
        const locals = p.exchange.local.map((name) => {
          const v = values.get(name) ?? feeds[name];
          if (!v) throw new Error(`graph ${this.plan.name}: exchange ${p.exchange!.path} lacks '${name}'`);
          return v;
        });
        if (!hooks.exchange) {
          throw new Error(
            `graph ${this.plan.name}: exchange point ${p.exchange.path} (${p.exchange.kind}) needs an exchange hook`,
          );
        }
        const into = p.exchange.assembled.map((a) => ({ data: this.pool.take(a), shape: a.shape }));
        const assembled = await hooks.exchange(p.exchange, locals, into);
        for (const b of into) if (!assembled.some((t) => t.data === b.data)) this.pool.give(b.data);
        p.exchange.assembled.forEach((a, i) => {
          const t = assembled[i];
          if (!t || !sameShape(t.shape, a.shape)) {
            throw new Error(
              `exchange ${p.exchange!.path} (${p.exchange!.kind}): expected ${a.name} [${a.shape.join(', ')}], got ${
                t ? `[${t.shape.join(', ')}]` : 'nothing'
              }`,
            );
          }
          values.set(a.name, t);
          if (into.some((b) => b.data === t.data)) pooled.add(a.name);
        });
        for (const name of p.exchange.local) release(name, p.index);
      }
    }
    return result;
  }

  /**
   * Runs the invariant prologue, or reuses its results when its inputs hold the same values as last time
   * (a denoising loop passes the same text conditioning every step: cross-attention K/V and the added
   * embeddings are then computed once).
   */
  private async runPrologue(
    session: ort.InferenceSession,
    p: SegmentPlan,
    feeds: Readonly<Record<string, HostTensor>>,
  ): Promise<ReadonlyMap<string, HostTensor>> {
    const inputs = p.inputs.map((i) => {
      const v = feeds[i.name];
      if (!v || i.source !== 'graph-input') {
        throw new Error(`graph ${this.plan.name}: the invariant prologue needs graph input '${i.name}'`);
      }
      return [i.name, v] as const;
    });
    const last = this.prologue;
    const unchanged =
      last !== undefined &&
      inputs.every(([name, v]) => {
        const old = last.inputs.get(name);
        if (!old || old.length !== v.data.length) return false;
        for (let k = 0; k < old.length; k++) if (old[k] !== v.data[k]) return false;
        return true;
      });
    if (unchanged) return last.outputs;
    const fetches: Record<string, ort.Tensor> = {};
    const outputs = new Map<string, HostTensor>();
    for (const o of p.outputs) {
      const t = { data: allocate(o.dtype, count(o.shape)), shape: o.shape };
      outputs.set(o.name, t);
      fetches[o.name] = toOrt(t);
    }
    const t0 = performance.now();
    await session.run(Object.fromEntries(inputs.map(([name, v]) => [name, toOrt(v)])), fetches);
    this.segmentMs[p.index]! += performance.now() - t0;
    this.prologue = { inputs: new Map(inputs.map(([name, v]) => [name, v.data.slice()])), outputs };
    return outputs;
  }

  async dispose(): Promise<void> {
    for (const s of this.segments) await s.session?.release();
  }
}
