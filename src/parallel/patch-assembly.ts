// Turns the peers' published pieces into the tensors a rank's graph reads: conv halo rows, the whole
// image's K/V, GroupNorm statistics over the whole image. Sync steps assemble fresh pieces (this step);
// async steps assemble stale ones (the previous step, or the last synchronous step in no_sync).
import type { ExchangeMarker } from '../graph/builder.js';
import type { HostTensor } from '../graph/runner.js';
import type { SyncMode } from './config.js';
import { type ExchangePoint, freshName, KV_PARTS, type KVPart } from './patch-hooks.js';
import type { SharedExchange } from './shared-exchange.js';

const f32 = Math.fround;

/** Weighted mean of per-member moments; equal weights sum first and divide once, as distrifuser does. */
export function combineMoments(
  pieces: readonly Float32Array[],
  weights: readonly number[],
  out: Float32Array,
): Float32Array {
  const equal = weights.every((w) => w === weights[0]);
  for (let i = 0; i < out.length; i++) {
    let acc = 0;
    if (equal) {
      for (const p of pieces) acc = f32(acc + p[i]!);
      out[i] = f32(acc / pieces.length);
    } else {
      pieces.forEach((p, k) => {
        acc = f32(acc + f32(p[i]! * weights[k]!));
      });
      out[i] = acc;
    }
  }
  return out;
}

export interface PatchAssemblerOptions {
  exchange: SharedExchange;
  points: readonly ExchangePoint[];
  member: number;
  members: number;
  mode: SyncMode;
  warmupSteps: number;
  /** The asynchronous graph's `stale:<point>:<what>` inputs (none without one). */
  staleInputs: readonly string[];
}

const STALE_INPUT = /^stale:(\d+):(\w+)$/;

interface FreshOutput {
  point: ExchangePoint;
  part: number;
  parts: number;
}

export class PatchAssembler {
  private readonly byFresh = new Map<string, FreshOutput>();
  /** Parts of a multi-part point written this step, announced when all are in. */
  private readonly partsWritten = new Map<number, number>();
  /** Per point, how many stale inputs an asynchronous step reads, and how many of them it has copied. */
  private readonly staleInputsOf = new Map<number, number>();
  private readonly staleCopied = new Map<number, number>();

  private warmupSteps: number;
  /** The denoising step being run, and its sequence number (monotonic over every run of the pool). */
  private step = 0;
  private seq = 0;

  constructor(private readonly o: PatchAssemblerOptions) {
    for (const point of o.points) {
      if (point.kind === 'kv') {
        for (const [i, part] of KV_PARTS.entries()) {
          this.byFresh.set(freshName(point, part), { point, part: i, parts: KV_PARTS.length });
        }
      } else {
        this.byFresh.set(freshName(point), { point, part: 0, parts: 1 });
      }
    }
    this.warmupSteps = o.warmupSteps;
    for (const name of o.staleInputs) {
      const m = STALE_INPUT.exec(name);
      if (!m) throw new Error(`exchange: unexpected stale input '${name}'`);
      const id = Number(m[1]);
      this.point(id, name);
      this.staleInputsOf.set(id, (this.staleInputsOf.get(id) ?? 0) + 1);
    }
  }

  /**
   * Starts a step. Warmup is a per-run setting (the compiled graphs serve any value); `seq` numbers the
   * exchanges, so a new run never mistakes the last run's data for its own. `readsStale`: the step runs
   * the asynchronous graph. Every point it will not read stale is marked consumed at once, so that its
   * owner may overwrite it; the others as soon as their stale inputs are copied.
   */
  begin(step: number, seq: number, warmupSteps: number, readsStale: boolean): void {
    this.step = step;
    this.seq = seq;
    this.warmupSteps = warmupSteps;
    this.partsWritten.clear();
    this.staleCopied.clear();
    for (const p of this.o.points) {
      if (!readsStale || !this.staleInputsOf.has(p.id)) this.o.exchange.markConsumed(p, seq);
    }
  }

  private point(id: number, what: string): ExchangePoint {
    const p = this.o.points[id];
    if (!p) throw new Error(`exchange: unknown point ${id} (${what})`);
    return p;
  }

  /**
   * A synchronous cut: publish this rank's piece for `step`, wait for every peer's, assemble into `into`
   * (the runner's pooled buffers of the assembled shapes).
   */
  exchangeSync(
    marker: ExchangeMarker,
    locals: readonly HostTensor[],
    into: readonly HostTensor[],
  ): HostTensor[] {
    const step = this.seq;
    const p = this.point(Number(marker.meta.point), marker.path);
    const ex = this.o.exchange;
    for (const [i, t] of locals.entries()) ex.write(p, step, t.data as Float32Array, i, locals.length);
    ex.announce(p, step);
    const pieces = Array.from({ length: this.o.members }, (_, k) => ex.read(p, k, step));
    const out = into.map((t) => t.data as Float32Array);
    switch (p.kind) {
      case 'halo': {
        const j = this.o.member;
        let k = 0;
        if (j > 0) haloRows(p, pieces[j - 1]!, 'bottom', out[k++]!);
        if (j < this.o.members - 1) haloRows(p, pieces[j + 1]!, 'top', out[k++]!);
        break;
      }
      case 'kv':
        for (const [part, o] of out.entries()) tokens(p, pieces, 0, this.o.members, part, o);
        break;
      case 'gn':
        combineMoments(pieces, p.weights, out[0]!);
        break;
    }
    return [...into];
  }

  /**
   * The sequence number of the data the current async step reads: the previous step's, frozen at the
   * last synchronous step in no_sync.
   */
  staleSeq(): number {
    const stale = this.o.mode === 'no_sync' ? Math.min(this.step - 1, this.warmupSteps) : this.step - 1;
    return this.seq - (this.step - stale);
  }

  /** A `stale:<point>:<what>` graph input of an async step, assembled into `into` (a pooled buffer). */
  staleInput(name: string, into: HostTensor): HostTensor {
    const m = STALE_INPUT.exec(name);
    if (!m) throw new Error(`exchange: unexpected graph input '${name}'`);
    const p = this.point(Number(m[1]), name);
    const what = m[2]!;
    const s = this.staleSeq();
    const j = this.o.member;
    const ex = this.o.exchange;
    const data = into.data as Float32Array;
    const n = data.length;
    switch (what) {
      case 'above':
        haloRows(p, ex.read(p, j - 1, s), 'bottom', data);
        break;
      case 'below':
        haloRows(p, ex.read(p, j + 1, s), 'top', data);
        break;
      case 'before_k':
      case 'before_v':
      case 'after_k':
      case 'after_v': {
        const [where, part] = what.split('_') as ['before' | 'after', KVPart];
        const [from, to] = where === 'before' ? [0, j] : [j + 1, this.o.members];
        const pieces = Array.from({ length: this.o.members }, (_, k) =>
          k >= from && k < to ? ex.read(p, k, s) : undefined,
        );
        tokens(p, pieces, from, to, KV_PARTS.indexOf(part), data);
        break;
      }
      case 'full':
        combineMoments(
          Array.from({ length: this.o.members }, (_, k) => ex.read(p, k, s)),
          p.weights,
          data,
        );
        break;
      case 'own':
        data.set(ex.read(p, j, s));
        break;
      case 'others': {
        const ks = Array.from({ length: this.o.members }, (_, k) => k).filter((k) => k !== j);
        const pieces = ks.map((k) => ex.read(p, k, s));
        const equal = p.weights.every((w) => w === p.weights[0]);
        for (let i = 0; i < n; i++) {
          let v = 0;
          pieces.forEach((piece, q) => {
            v = f32(v + (equal ? piece[i]! : f32(piece[i]! * p.weights[ks[q]!]!)));
          });
          data[i] = equal ? f32(v / this.o.members) : v;
        }
        break;
      }
      default:
        throw new Error(`exchange: unexpected graph input '${name}'`);
    }
    const copied = (this.staleCopied.get(p.id) ?? 0) + 1;
    this.staleCopied.set(p.id, copied);
    if (copied === this.staleInputsOf.get(p.id)) ex.markConsumed(p, this.seq);
    return into;
  }

  /** Publishes an async step's fresh output; false when the name is not an exchange output. */
  publishFresh(name: string, t: HostTensor): boolean {
    const f = this.byFresh.get(name);
    if (!f) return false;
    const ex = this.o.exchange;
    ex.write(f.point, this.seq, t.data as Float32Array, f.part, f.parts);
    const written = (this.partsWritten.get(f.point.id) ?? 0) + 1;
    this.partsWritten.set(f.point.id, written);
    if (written === f.parts) ex.announce(f.point, this.seq);
    return true;
  }
}

/** Halo rows [B, C, p, W] out of a neighbour's edge piece [B, C, 2p, W] (top edge rows first). */
function haloRows(p: ExchangePoint, piece: Float32Array, edge: 'top' | 'bottom', out: Float32Array): void {
  const rowLen = p.cols * p.pad;
  for (let bc = 0; bc < p.batch * p.channels; bc++) {
    const src = bc * 2 * rowLen + (edge === 'bottom' ? rowLen : 0);
    out.set(piece.subarray(src, src + rowLen), bc * rowLen);
  }
}

/**
 * Part `part` of KV_PARTS (K or V) of members [from, to) concatenated per batch entry: [B, Σ tokens, width],
 * out of pieces laid out [K: B, tokens, width][V: B, tokens, width].
 */
function tokens(
  p: ExchangePoint,
  pieces: ReadonlyArray<Float32Array | undefined>,
  from: number,
  to: number,
  part: number,
  out: Float32Array,
): void {
  const width = p.channels / KV_PARTS.length;
  let total = 0;
  for (let k = from; k < to; k++) total += p.rowsPerMember[k]!;
  for (let b = 0; b < p.batch; b++) {
    let at = b * total * width;
    for (let k = from; k < to; k++) {
      const len = p.rowsPerMember[k]! * width;
      const start = part * p.batch * len + b * len;
      out.set(pieces[k]!.subarray(start, start + len), at);
      at += len;
    }
  }
}
