// The on-host communicator: ranks are worker threads that publish into SharedArrayBuffer slots and read
// their peers' slots directly, so data moves while the owner's compute thread is busy inside
// session.run. Each point has one slot per member. A reader copies what it needs out of a slot (ORT
// cannot read a SharedArrayBuffer in place: onnxruntime-node 1.30 rejects such tensors as "Invalid
// argument") and then marks the point consumed for its step; the owner overwrites a slot only once every
// peer has marked it. Readers of an asynchronous step mark a point as soon as they have copied its stale
// data, long before the owner's fresh data for that step is out, so the owner does not wait in practice,
// and a second slot per member (as double buffering would keep) is memory saved: 1.62 GiB for two SDXL
// ranks at 1024². Sequence numbers make every read race-free and checkable, and every wait has a
// deadline and watches the abort word.
import { performance } from 'node:perf_hooks';
import { type ExchangePoint, pointElems } from './patch-hooks.js';

export interface ExchangeBuffers {
  /**
   * Int32 words: [point][member] = last published step + 1, then [point][member] = the step whose reads of
   * the point that member has finished, + 1.
   */
  control: SharedArrayBuffer;
  /** Float32 slots: [point][member]. */
  data: SharedArrayBuffer;
}

function slotOffsets(
  points: readonly ExchangePoint[],
  members: number,
): { offsets: number[][]; total: number } {
  let at = 0;
  const offsets = points.map((p) =>
    Array.from({ length: members }, (_, k) => {
      const o = at;
      at += pointElems(p, k);
      return o;
    }),
  );
  return { offsets, total: at };
}

export function createExchangeBuffers(points: readonly ExchangePoint[], members: number): ExchangeBuffers {
  const { total } = slotOffsets(points, members);
  return {
    control: new SharedArrayBuffer(Math.max(4, 2 * points.length * members * 4)),
    data: new SharedArrayBuffer(Math.max(4, total * 4)),
  };
}

/** Word 0 of the abort buffer: 0 while healthy, else 1 + the rank that failed (or −1 when the host aborts). */
export const ABORT_WORDS = 4;

export class RankFailure extends Error {
  constructor(
    readonly rank: number,
    message: string,
  ) {
    super(message);
    this.name = 'RankFailure';
  }
}

export interface SharedExchangeOptions {
  points: readonly ExchangePoint[];
  members: number;
  member: number;
  buffers: ExchangeBuffers;
  abort: SharedArrayBuffer;
  timeoutMs: number;
  /** Global rank of a member of this group (for error messages). */
  rankOf: (member: number) => number;
}

export class SharedExchange {
  private readonly seq: Int32Array;
  private readonly data: Float32Array;
  private readonly abort: Int32Array;
  private readonly offsets: number[][];
  /** Per point, the step its slot was last cleared for writing (checked once per step, not per part). */
  private readonly clearedFor: Int32Array;
  /** Milliseconds spent waiting for peers, and bytes published, since the last reset. */
  waitMs = 0;
  bytesPublished = 0;

  constructor(private readonly o: SharedExchangeOptions) {
    this.seq = new Int32Array(o.buffers.control);
    this.data = new Float32Array(o.buffers.data);
    this.abort = new Int32Array(o.abort);
    this.offsets = slotOffsets(o.points, o.members).offsets;
    this.clearedFor = new Int32Array(o.points.length).fill(-1);
  }

  /**
   * Writes this rank's own slots once, at launch, before any is announced. The buffer comes as untouched
   * zero pages, so otherwise the first step takes the page faults of every slot it fills (0.4 GiB per rank
   * at SDXL 1024² on two ranks; 3.5 s per GiB on the development VM), and a machine short of memory fails
   * mid-run rather than at launch. Each rank faults its own, in parallel.
   */
  faultInOwnSlots(): void {
    for (const point of this.o.points) this.slot(point, this.o.member).fill(0);
  }

  get rank(): number {
    return this.o.rankOf(this.o.member);
  }

  private word(point: ExchangePoint, member: number): number {
    return point.id * this.o.members + member;
  }

  private consumedWord(point: ExchangePoint, member: number): number {
    return (this.o.points.length + point.id) * this.o.members + member;
  }

  private slot(point: ExchangePoint, member: number): Float32Array {
    const off = this.offsets[point.id]![member]!;
    return this.data.subarray(off, off + pointElems(point, member));
  }

  /**
   * Tells the peers that this rank, in `step`, is done with what it reads of `point` (the stale data it
   * copied, or nothing to read): its owner may overwrite it with that step's data.
   */
  markConsumed(point: ExchangePoint, step: number): void {
    const w = this.consumedWord(point, this.o.member);
    Atomics.store(this.seq, w, step + 1);
    Atomics.notify(this.seq, w);
  }

  /** Waits until every peer has finished reading this rank's slot of `point` for `step`. */
  private clearForWriting(point: ExchangePoint, step: number): void {
    if (this.clearedFor[point.id] === step) return;
    for (let k = 0; k < this.o.members; k++) {
      if (k !== this.o.member)
        this.waitFor(this.consumedWord(point, k), step + 1, k, `to read ${point.kind} '${point.path}'`);
    }
    this.clearedFor[point.id] = step;
  }

  /** Waits (with the deadline and the abort word) until word `w` reaches `want`; returns its value. */
  private waitFor(w: number, want: number, member: number, what: string): number {
    let v = Atomics.load(this.seq, w);
    if (v >= want) return v;
    const t0 = performance.now();
    const deadline = t0 + this.o.timeoutMs;
    for (;;) {
      this.checkAbort();
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new RankFailure(
          this.o.rankOf(member),
          `rank ${this.rank}: timed out after ${this.o.timeoutMs} ms waiting for rank ${this.o.rankOf(member)} ${what} (step ${want - 1})`,
        );
      }
      Atomics.wait(this.seq, w, v, Math.min(left, 100));
      v = Atomics.load(this.seq, w);
      if (v >= want) break;
    }
    this.waitMs += performance.now() - t0;
    return v;
  }

  /**
   * Copies part `part` of `parts` equal parts of this rank's data for `step` into its slot (a K/V point
   * has two, K and V; others one), without announcing it: `announce` once every part is in.
   */
  write(point: ExchangePoint, step: number, values: Float32Array, part: number, parts: number): void {
    this.clearForWriting(point, step);
    const slot = this.slot(point, this.o.member);
    const len = slot.length / parts;
    if (values.length !== len) {
      throw new Error(
        `rank ${this.rank}: ${point.kind} at '${point.path}' publishes ${values.length} values${parts > 1 ? ` as part ${part + 1} of ${parts}` : ''}, slot holds ${len}`,
      );
    }
    slot.set(values, part * len);
    this.bytesPublished += values.byteLength;
  }

  /** Tells the peers that this rank's data for `step` is complete. */
  announce(point: ExchangePoint, step: number): void {
    const w = this.word(point, this.o.member);
    Atomics.store(this.seq, w, step + 1);
    Atomics.notify(this.seq, w);
  }

  checkAbort(): void {
    const a = Atomics.load(this.abort, 0);
    if (a !== 0) {
      const who = a - 1;
      throw new RankFailure(
        who,
        `rank ${this.rank}: stopping because ${who >= 0 ? `rank ${who} failed` : 'the run was aborted'}`,
      );
    }
  }

  /** Member `member`'s data of `step`, waiting (with the deadline) until it is published. */
  read(point: ExchangePoint, member: number, step: number): Float32Array {
    if (member === this.o.member) {
      // A rank's own stale data (GroupNorm statistics) must be read before its fresh data replaces it.
      const own = Atomics.load(this.seq, this.word(point, member));
      if (own > step + 1) {
        throw new Error(
          `rank ${this.rank}: ${point.kind} at '${point.path}' reads its own data of step ${step} after publishing step ${own - 1} over it`,
        );
      }
      return this.slot(point, member);
    }
    const v = this.waitFor(this.word(point, member), step + 1, member, `at ${point.kind} '${point.path}'`);
    // Owners wait for their readers, so a newer step here means the exchange broke its own rule.
    if (v > step + 1) {
      throw new Error(
        `rank ${this.rank}: rank ${this.o.rankOf(member)} is at step ${v - 1} while step ${step} is read at '${point.path}'`,
      );
    }
    return this.slot(point, member);
  }
}
