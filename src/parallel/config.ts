// DistriConfig: plain data describing how one generation is split across ranks. Constructing it opens
// nothing; launching ranks is the launcher's job.

export type SyncMode =
  | 'corrected_async_gn'
  | 'stale_gn'
  | 'sync_gn'
  | 'separate_gn'
  | 'full_sync'
  | 'no_sync';
export type Parallelism = 'patch' | 'naive_patch';
export type SplitScheme = 'row' | 'col' | 'alternate';

export const SYNC_MODES: readonly SyncMode[] = [
  'corrected_async_gn',
  'stale_gn',
  'sync_gn',
  'separate_gn',
  'full_sync',
  'no_sync',
];
export const PARALLELISMS: readonly Parallelism[] = ['patch', 'naive_patch'];
export const SPLIT_SCHEMES: readonly SplitScheme[] = ['row', 'col', 'alternate'];

export interface DistriConfigInput {
  /** Image size in pixels. */
  height: number;
  width: number;
  /** Number of ranks (any count >= 1). */
  ranks?: number;
  /** Synchronous steps before the stale (asynchronous) ones: warmupSteps + 1 of them, as in distrifuser. */
  warmupSteps?: number;
  mode?: SyncMode;
  parallelism?: Parallelism;
  /** Split classifier-free guidance across two rank groups (when ranks is even). */
  splitBatch?: boolean;
  /** How naive_patch cuts the latent. Patch parallelism always uses row bands. */
  splitScheme?: SplitScheme;
  /** Intra-op threads of each rank. */
  threadsPerRank?: number;
  /** Execution device per rank ('cpu', 'cuda:N', 'webgpu'), or one for all. */
  device?: string | readonly string[];
  /** Longest wait for a peer, in milliseconds, before the run fails naming the rank. */
  timeoutMs?: number;
  /**
   * Cut the asynchronous graph at self-attentions into segments run without ORT's memory arena: the
   * stale K/V then lives only while its segment runs, and the fresh K/V leaves when its segment ends,
   * not at the end of the step. Pays off at large sizes only. Measured, two SDXL ranks with packed shared
   * weights at 1024² and one exchange slot per rank: peak PSS 16.2-16.9 GiB with it (the default
   * lowMemorySegmentBytes), 19.9 GiB without, of 23.4 GiB, at no cost in step time (README, Benchmarks).
   * Default false.
   */
  lowMemory?: boolean;
  /**
   * With lowMemory: how many bytes of whole-image self-attention K/V (the peers' stale part and this
   * rank's fresh part) one asynchronous segment may hold before the graph is cut at the next
   * self-attention. Fewer cuts are faster, more hold less. 0 cuts at every self-attention.
   * Default LOW_MEMORY_SEGMENT_BYTES.
   */
  lowMemorySegmentBytes?: number;
  /**
   * Decode the image on ranks too (as many as `ranks`, on the same devices), each one row band, every
   * exchange synchronous, so the image equals the single-device decode; distrifuser has every rank decode
   * the whole image. Default false: the VAE decodes on the calling thread. Measured on two CPU ranks (SDXL
   * VAE at 1024²), the split took 1.07x the time of one rank with both threads and 1.8x its peak memory
   * (README, Benchmarks); it is for ranks that each have a device of their own.
   */
  splitVaeDecode?: boolean;
}

export interface DistriConfig {
  readonly height: number;
  readonly width: number;
  readonly ranks: number;
  readonly warmupSteps: number;
  readonly mode: SyncMode;
  readonly parallelism: Parallelism;
  readonly splitBatch: boolean;
  readonly splitScheme: SplitScheme;
  readonly threadsPerRank: number;
  readonly devices: readonly string[];
  readonly timeoutMs: number;
  readonly lowMemory: boolean;
  readonly lowMemorySegmentBytes: number;
  readonly splitVaeDecode: boolean;
}

function positiveInt(name: string, v: number | undefined, fallback: number, min = 1): number {
  const x = v ?? fallback;
  if (!Number.isInteger(x) || x < min)
    throw new Error(`DistriConfig.${name}: expected an integer >= ${min}, got ${v}`);
  return x;
}

function oneOf<T extends string>(name: string, v: T | undefined, allowed: readonly T[], fallback: T): T {
  const x = v ?? fallback;
  if (!allowed.includes(x))
    throw new Error(`DistriConfig.${name}: expected one of ${allowed.join(', ')}, got ${String(v)}`);
  return x;
}

/** DistriConfig.lowMemorySegmentBytes by default (measured in the README, SDXL at 512² and 1024²). */
export const LOW_MEMORY_SEGMENT_BYTES = 256 * 2 ** 20;

/** Validates and fills defaults (warmupSteps 4, corrected_async_gn, patch, splitBatch true, row). */
export function distriConfig(input: DistriConfigInput): DistriConfig {
  const ranks = positiveInt('ranks', input.ranks, 1);
  for (const k of ['height', 'width'] as const) {
    const v = input[k];
    if (!Number.isInteger(v) || v <= 0)
      throw new Error(`DistriConfig.${k}: expected a positive integer, got ${v}`);
  }
  const devices =
    typeof input.device === 'string' || input.device === undefined
      ? [input.device ?? 'cpu']
      : [...input.device];
  if (devices.length !== 1 && devices.length !== ranks) {
    throw new Error(
      `DistriConfig.device: expected one device or ${ranks} (one per rank), got ${devices.length}`,
    );
  }
  return {
    height: input.height,
    width: input.width,
    ranks,
    warmupSteps: positiveInt('warmupSteps', input.warmupSteps, 4, 0),
    mode: oneOf('mode', input.mode, SYNC_MODES, 'corrected_async_gn'),
    parallelism: oneOf('parallelism', input.parallelism, PARALLELISMS, 'patch'),
    splitBatch: input.splitBatch ?? true,
    splitScheme: oneOf('splitScheme', input.splitScheme, SPLIT_SCHEMES, 'row'),
    threadsPerRank: positiveInt('threadsPerRank', input.threadsPerRank, 1),
    devices: devices.length === 1 ? new Array(ranks).fill(devices[0]) : devices,
    timeoutMs: positiveInt('timeoutMs', input.timeoutMs, 600_000),
    lowMemory: input.lowMemory ?? false,
    lowMemorySegmentBytes: positiveInt(
      'lowMemorySegmentBytes',
      input.lowMemorySegmentBytes,
      LOW_MEMORY_SEGMENT_BYTES,
      0,
    ),
    splitVaeDecode: input.splitVaeDecode ?? false,
  };
}

/** How ranks group: with CFG split, ranks [0, n/2) take the unconditional half and [n/2, n) the conditional. */
export interface RankLayout {
  /** Ranks that share one batch (and exchange with each other). */
  groupSize: number;
  groups: number;
  /** Whether each group runs one CFG half (true) or the whole batch (false). */
  cfgSplit: boolean;
}

export function rankLayout(c: DistriConfig, classifierFreeGuidance: boolean): RankLayout {
  const cfgSplit = c.splitBatch && classifierFreeGuidance && c.ranks >= 2 && c.ranks % 2 === 0;
  return cfgSplit
    ? { groupSize: c.ranks / 2, groups: 2, cfgSplit }
    : { groupSize: c.ranks, groups: 1, cfgSplit };
}

/** distrifuser's counter rule: steps 0..warmupSteps (warmupSteps + 1 of them) are synchronous. */
export function isSyncStep(c: DistriConfig, step: number, warmupSteps = c.warmupSteps): boolean {
  return c.mode === 'full_sync' || step <= warmupSteps;
}
