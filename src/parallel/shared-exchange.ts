// The on-host communicator: ranks are worker threads that publish into SharedArrayBuffer slots and read
// their peers' slots directly, so data moves while the owner's compute thread is busy inside
// session.run. Each point has two slots per member (step parity): a rank may publish step t+1 while a
// slower peer still reads step t. Sequence numbers make every read race-free and checkable, and every
// wait has a deadline and watches the abort word.
import { performance } from 'node:perf_hooks';
import { type ExchangePoint, pointElems } from './patch-hooks.js';

export interface ExchangeBuffers {
  /** Int32 sequence words: [point][member] = last published step + 1. */
  control: SharedArrayBuffer;
  /** Float32 slots: [point][parity][member]. */
  data: SharedArrayBuffer;
}

export function slotOffsets(
  points: readonly ExchangePoint[],
  members: number,
): { offsets: number[][][]; total: number } {
  let at = 0;
  const offsets = points.map((p) =>
    [0, 1].map(() =>
      Array.from({ length: members }, (_, k) => {
        const o = at;
        at += pointElems(p, k);
        return o;
      }),
    ),
  );
  return { offsets, total: at };
}

export function createExchangeBuffers(points: readonly ExchangePoint[], members: number): ExchangeBuffers {
  const { total } = slotOffsets(points, members);
  return {
    control: new SharedArrayBuffer(Math.max(4, points.length * members * 4)),
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
  private readonly offsets: number[][][];
  /** Milliseconds spent waiting for peers, and bytes published, since the last reset. */
  waitMs = 0;
  bytesPublished = 0;

  constructor(private readonly o: SharedExchangeOptions) {
    this.seq = new Int32Array(o.buffers.control);
    this.data = new Float32Array(o.buffers.data);
    this.abort = new Int32Array(o.abort);
    this.offsets = slotOffsets(o.points, o.members).offsets;
  }

  /**
   * Writes this rank's own slots once, at launch, before any is announced. The buffer comes as untouched
   * zero pages, so otherwise the first step of each parity takes the page faults of every slot it fills
   * (0.4 GiB per rank and parity at SDXL 1024² on two ranks; 3.5 s per GiB on the development VM), and a
   * machine short of memory fails mid-run rather than at launch. Each rank faults its own, in parallel.
   */
  faultInOwnSlots(): void {
    for (const point of this.o.points)
      for (const step of [0, 1]) this.slot(point, this.o.member, step).fill(0);
  }

  get rank(): number {
    return this.o.rankOf(this.o.member);
  }

  private word(point: ExchangePoint, member: number): number {
    return point.id * this.o.members + member;
  }

  private slot(point: ExchangePoint, member: number, step: number): Float32Array {
    const off = this.offsets[point.id]![step & 1]![member]!;
    return this.data.subarray(off, off + pointElems(point, member));
  }

  /**
   * Copies part `part` of `parts` equal parts of this rank's data for `step` into its slot (a K/V point
   * has two, K and V; others one), without announcing it: `announce` once every part is in.
   */
  write(point: ExchangePoint, step: number, values: Float32Array, part: number, parts: number): void {
    const slot = this.slot(point, this.o.member, step);
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
    if (member === this.o.member) return this.slot(point, member, step);
    const w = this.word(point, member);
    const want = step + 1;
    let v = Atomics.load(this.seq, w);
    if (v < want) {
      const t0 = performance.now();
      const deadline = t0 + this.o.timeoutMs;
      for (;;) {
        this.checkAbort();
        const left = deadline - performance.now();
        if (left <= 0) {
          throw new RankFailure(
            this.o.rankOf(member),
            `rank ${this.rank}: timed out after ${this.o.timeoutMs} ms waiting for rank ${this.o.rankOf(member)} at ${point.kind} '${point.path}' (step ${step})`,
          );
        }
        Atomics.wait(this.seq, w, v, Math.min(left, 100));
        v = Atomics.load(this.seq, w);
        if (v >= want) break;
      }
      this.waitMs += performance.now() - t0;
    }
    // One step ahead is fine (the other parity); two would have overwritten what we read.
    if (v > want + 1) {
      throw new Error(
        `rank ${this.rank}: rank ${this.o.rankOf(member)} is at step ${v - 1} while step ${step} is read at '${point.path}'`,
      );
    }
    return this.slot(point, member, step);
  }
}
