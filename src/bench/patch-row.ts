// One row of `bench patch`: a RankPool running the UNet rank program for a few denoising steps at one
// split (ranks × threads, parallelism, sync mode), with per-step timing and exchange figures from pool.stats.
import { performance } from 'node:perf_hooks';
import { UNet2DConditionModel } from '../models/unet-2d-condition.js';
import { distriConfig, type Parallelism, type SyncMode } from '../parallel/config.js';
import type { StepStats } from '../parallel/rank-pool.js';
import { launchUNetPool } from '../pipelines/unet-rank-program.js';
import { latentSize, unetFeeds } from './bench-inputs.js';
import { sampleProcessPss } from './isolate.js';
import { median, peakRssBytes } from './table.js';
import type { Progress } from './unet-row.js';

export interface PatchRowSpec {
  model: string;
  modelDir: string;
  ranks: number;
  threadsPerRank: number;
  parallelism: Parallelism;
  mode: SyncMode;
  splitBatch: boolean;
  /** Pixels. */
  height: number;
  width: number;
  /** UNet batch: 2 = the unconditional and conditional halves of one image. */
  batch: number;
  steps: number;
  warmupSteps: number;
  /** Run each compiled graph once before the timed steps (first runs are slower). */
  prime: boolean;
  timeoutMs: number;
  /**
   * Ranks map one shared float32 copy of the weights ('extended' level): 'auto' does so
   * for several CPU ranks, as the pipelines do.
   */
  shareWeights: 'auto' | 'on' | 'off';
  /** Shared conv filters are stored reordered for ORT's NCHWc kernel (where this CPU has it). */
  nchwcWeights: boolean;
  /** Shared linear weights come with ORT's packed GEMM copies, mapped by every rank. */
  packedGemm: boolean;
  /** DistriConfig.lowMemory. */
  lowMemory: boolean;
  /** DistriConfig.lowMemorySegmentBytes (its default when absent). */
  lowMemorySegmentBytes?: number;
  /** Sessions write ORT profiles named from this prefix (EngineOptions.profilePrefix). */
  ortProfilePrefix?: string;
}

export type StepPhase = 'warmup' | 'async';

export interface StepRecord {
  step: number;
  /** Which run of the row this step belongs to (bench patch --rounds), from 1. */
  round: number;
  phase: StepPhase;
  ms: number;
  /** Sum over ranks. */
  bytesPublished: number;
  /** Means over ranks: running segments, waiting on peers, copying exchange data. */
  computeMs: number;
  waitMs: number;
  copyMs: number;
  perRank: StepStats['perRank'];
}

export interface PhaseSummary {
  steps: number;
  /** Median wall time of one step (all ranks). */
  ms: number;
  bytesPerStep: number;
  /** Medians over steps of the means over ranks. */
  computeMs: number;
  waitMs: number;
  copyMs: number;
}

export interface PatchRowResult {
  model: string;
  ranks: number;
  threadsPerRank: number;
  parallelism: Parallelism;
  mode: SyncMode;
  splitBatch: boolean;
  height: number;
  width: number;
  batch: number;
  warmupSteps: number;
  primed: boolean;
  /** Whether the ranks mapped one shared weight copy. */
  sharedWeights: boolean;
  /** The NCHWc block its conv filters were reordered for (0: none). */
  nchwcBlock: number;
  /** Whether its linear weights came with shared packed GEMM copies. */
  packedGemm: boolean;
  exchangePoints: number;
  /** RankPool.launch: worker start, model load and graph compilation on every rank. */
  launchMs: number;
  warmup: PhaseSummary;
  async: PhaseSummary;
  steps: StepRecord[];
  peakRssBytes: number;
}

const mean = (v: readonly number[]): number => v.reduce((a, b) => a + b, 0) / v.length;

function summarise(records: readonly StepRecord[]): PhaseSummary {
  return {
    steps: records.length,
    ms: median(records.map((r) => r.ms)),
    bytesPerStep: median(records.map((r) => r.bytesPublished)),
    computeMs: median(records.map((r) => r.computeMs)),
    waitMs: median(records.map((r) => r.waitMs)),
    copyMs: median(records.map((r) => r.copyMs)),
  };
}

/**
 * One result from several runs (rounds) of the same row: every step of every round, summarised anew;
 * peak RSS is the highest, launch time the median.
 */
export function mergeRounds(results: readonly PatchRowResult[]): PatchRowResult {
  const first = results[0];
  if (!first) throw new Error('mergeRounds: no results to merge');
  const steps = results.flatMap((r, i) => r.steps.map((st) => ({ ...st, round: i + 1 })));
  return {
    ...first,
    launchMs: median(results.map((r) => r.launchMs)),
    warmup: summarise(steps.filter((r) => r.phase === 'warmup')),
    async: summarise(steps.filter((r) => r.phase === 'async')),
    steps,
    peakRssBytes: Math.max(...results.map((r) => r.peakRssBytes)),
  };
}

/** Runs one configuration. */
export async function runPatchRow(s: PatchRowSpec, progress: Progress = () => {}): Promise<PatchRowResult> {
  const unet = await UNet2DConditionModel.fromPretrained(s.modelDir);
  const [h, w] = latentSize(s.height, s.width);
  const config = distriConfig({
    height: s.height,
    width: s.width,
    ranks: s.ranks,
    threadsPerRank: s.threadsPerRank,
    parallelism: s.parallelism,
    mode: s.mode,
    splitBatch: s.splitBatch,
    warmupSteps: s.warmupSteps,
    timeoutMs: s.timeoutMs,
    lowMemory: s.lowMemory,
    ...(s.lowMemorySegmentBytes !== undefined ? { lowMemorySegmentBytes: s.lowMemorySegmentBytes } : {}),
  });
  const t0 = performance.now();
  const launched = await launchUNetPool(unet, s.modelDir, {
    config,
    classifierFreeGuidance: true,
    batch: s.batch,
    latentHeight: h,
    latentWidth: w,
    ...(s.shareWeights === 'auto' ? {} : { shareWeights: s.shareWeights === 'on' }),
    nchwcWeights: s.nchwcWeights,
    packedGemmWeights: s.packedGemm,
    ...(s.ortProfilePrefix ? { engine: { profilePrefix: s.ortProfilePrefix } } : {}),
  });
  const pool = launched.pool;
  const launchMs = performance.now() - t0;
  progress(
    `launched in ${(launchMs / 1000).toFixed(1)} s (${pool.points.length} exchange points), ${memoryNow()}`,
  );
  try {
    const feeds = unetFeeds(unet.config, { batch: s.batch, height: s.height, width: s.width });
    const timestep = feeds.timestep!.data as Float32Array;
    const run = async (step: number) => {
      timestep.fill(999 - Math.floor((step * 1000) / s.steps));
      await pool.step(step, feeds);
    };
    if (s.prime) {
      await run(0);
      progress(`primed the synchronous graph, ${memoryNow()}`);
      // Rows without exchange (one rank, CFG split alone) and full_sync rows run one graph: primed already.
      const asyncGraph = s.parallelism === 'patch' && pool.points.length > 0 && s.mode !== 'full_sync';
      if (asyncGraph && s.steps > s.warmupSteps + 1) {
        await run(s.warmupSteps + 1);
        progress(`primed the asynchronous graph, ${memoryNow()}`);
      }
      pool.stats.length = 0;
    }
    for (let step = 0; step < s.steps; step++) {
      await run(step);
      progress(
        `step ${step + 1}/${s.steps}: ${(pool.stats[pool.stats.length - 1]!.ms / 1000).toFixed(2)} s, ${memoryNow()}`,
      );
    }
    // Naive patches never sync; a single rank has nothing to sync: split their steps by index as patch does.
    const records: StepRecord[] = pool.stats.map((st) => ({
      step: st.step,
      round: 1,
      phase: (s.parallelism === 'patch' ? st.sync : st.step <= s.warmupSteps) ? 'warmup' : 'async',
      ms: st.ms,
      bytesPublished: st.perRank.reduce((a, r) => a + r.bytesPublished, 0),
      computeMs: mean(st.perRank.map((r) => r.computeMs)),
      waitMs: mean(st.perRank.map((r) => r.waitMs)),
      copyMs: mean(st.perRank.map((r) => r.copyMs)),
      perRank: st.perRank,
    }));
    return {
      model: s.model,
      ranks: s.ranks,
      threadsPerRank: s.threadsPerRank,
      parallelism: s.parallelism,
      mode: s.mode,
      splitBatch: s.splitBatch,
      height: s.height,
      width: s.width,
      batch: s.batch,
      warmupSteps: s.warmupSteps,
      primed: s.prime,
      sharedWeights: launched.sharedWeights,
      nchwcBlock: launched.nchwcBlock,
      packedGemm: launched.packedGemm,
      exchangePoints: pool.points.length,
      launchMs,
      warmup: summarise(records.filter((r) => r.phase === 'warmup')),
      async: summarise(records.filter((r) => r.phase === 'async')),
      steps: records,
      peakRssBytes: peakRssBytes(),
    };
  } finally {
    await pool.close();
    await unet.dispose();
  }
}

/** RSS counts the shared weight copy once per session that maps it; PSS counts it once. */
function memoryNow(): string {
  const gib = (n: number) => (n / 2 ** 30).toFixed(2);
  const pss = sampleProcessPss();
  return `RSS ${gib(process.memoryUsage.rss())} GiB${pss > 0 ? `, PSS ${gib(pss)} GiB` : ''}`;
}
