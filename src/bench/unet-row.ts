// One row of `bench unet`: a whole-UNet forward at one thread count, beside one large 3x3 conv for reference,
// both run by ORT in this process.
import { performance } from 'node:perf_hooks';
import { GraphBuilder } from '../graph/builder.js';
import * as F from '../graph/functional.js';
import { CompiledGraph, type HostTensor } from '../graph/runner.js';
import { type EngineOptions, weightLoadingStats } from '../graph/session.js';
import { UNet2DConditionModel } from '../models/unet-2d-condition.js';
import { Generator, randn } from '../schedulers/random.js';
import { latentSize, unetFeeds } from './bench-inputs.js';
import { countFlops } from './flops.js';
import { sampleProcessPss } from './isolate.js';
import { median, peakRssBytes } from './table.js';

export interface UnetRowSpec {
  model: string;
  modelDir: string;
  batch: number;
  /** Pixels. */
  height: number;
  width: number;
  threads: number;
  /** Timed forwards after one untimed warm-up. */
  repeats: number;
  convReference: boolean;
  prepacking: boolean;
  /** How ORT gets the weights (EngineOptions.weights). */
  weights: 'mmap' | 'memory';
  optimization: NonNullable<EngineOptions['optimization']>;
}

export interface TimedRuns {
  flops: number;
  compileMs: number;
  warmupMs: number;
  runsMs: number[];
  medianMs: number;
  gflops: number;
}

export interface UnetRowResult {
  model: string;
  batch: number;
  height: number;
  width: number;
  threads: number;
  prepacking: boolean;
  optimization: string;
  /** How the UNet session actually got its weights ('mmap' falls back to 'memory' where it cannot link). */
  weightLoading: 'mmap' | 'memory';
  weightBytes: number;
  weightDtype: string;
  loadMs: number;
  segments: number;
  /** FLOPs per forward: the timed runs' count (`unet.flops`) leaves out the invariant prologue. */
  flopsTotal: number;
  flopsInvariant: number;
  unet: TimedRuns;
  /** One 3x3 conv, 320→320 channels at 128x128, batch 1, same thread count. */
  conv?: TimedRuns;
  /** UNet GFLOP/s over conv GFLOP/s. */
  ratioToConv?: number;
  peakRssBytes: number;
}

export type Progress = (message: string) => void;

async function timeRuns(
  graph: CompiledGraph,
  feeds: Record<string, HostTensor>,
  flops: number,
  compileMs: number,
  repeats: number,
  progress: Progress,
  what: string,
): Promise<TimedRuns> {
  let t0 = performance.now();
  await graph.run(feeds);
  const warmupMs = performance.now() - t0;
  progress(`${what}: warm-up ${(warmupMs / 1000).toFixed(2)} s`);
  sampleProcessPss();
  const runsMs: number[] = [];
  for (let i = 0; i < repeats; i++) {
    t0 = performance.now();
    await graph.run(feeds);
    runsMs.push(performance.now() - t0);
    progress(`${what}: run ${i + 1}/${repeats} ${(runsMs[i]! / 1000).toFixed(2)} s`);
    sampleProcessPss();
  }
  const medianMs = median(runsMs);
  return { flops, compileMs, warmupMs, runsMs, medianMs, gflops: flops / medianMs / 1e6 };
}

/** The reference: one 320-channel 3x3 conv at 128x128, the shape DESIGN §4 measured. */
export async function convReference(
  engine: EngineOptions,
  repeats: number,
  progress: Progress,
): Promise<TimedRuns> {
  const [c, size] = [320, 128];
  const g = new Generator(1);
  const b = new GraphBuilder('conv-reference');
  const x = b.input('x', 'float32', [1, c, size, size]);
  const w = b.constant(randn([c, c, 3, 3], g), [c, c, 3, 3]);
  b.output('y', F.conv2d(x, w, b.constFloat(new Array(c).fill(0)), { pads: [1, 1, 1, 1] }));
  const t0 = performance.now();
  const graph = await CompiledGraph.fromBuilder(b, engine);
  const compileMs = performance.now() - t0;
  try {
    const feeds = { x: { data: randn([1, c, size, size], g), shape: [1, c, size, size] } };
    return await timeRuns(graph, feeds, countFlops(b).total, compileMs, repeats, progress, 'conv reference');
  } finally {
    await graph.dispose();
  }
}

export async function runUnetRow(s: UnetRowSpec, progress: Progress = () => {}): Promise<UnetRowResult> {
  const engine: EngineOptions = {
    threads: s.threads,
    weights: s.weights,
    optimization: s.optimization,
    ...(s.prepacking ? {} : { prepacking: false }),
  };
  const conv = s.convReference ? await convReference(engine, Math.max(s.repeats, 3), progress) : undefined;
  let t0 = performance.now();
  const unet = await UNet2DConditionModel.fromPretrained(s.modelDir);
  const loadMs = performance.now() - t0;
  const [h, w] = latentSize(s.height, s.width);
  const builder = unet.buildGraph({ batch: s.batch, height: h, width: w });
  // Timed runs repeat the same text conditioning: the runner reuses its invariant prologue, so they cost
  // total - invariant (the warm-up computes it).
  const counted = countFlops(builder);
  const flops = counted.total - counted.invariant;
  const dtypes = new Set([...builder.weights.values()].map((u) => u.entry.dtype));
  progress(
    `${(flops / 1e12).toFixed(3)} TFLOP per forward; compiling (${(builder.weightBytes() / 1e9).toFixed(2)} GB of weights)`,
  );
  t0 = performance.now();
  const mappedBefore = weightLoadingStats.mapped;
  const graph = await CompiledGraph.fromBuilder(builder, engine);
  const weightLoading = weightLoadingStats.mapped > mappedBefore ? 'mmap' : 'memory';
  const compileMs = performance.now() - t0;
  progress(
    `compiled in ${(compileMs / 1000).toFixed(1)} s (${weightLoading} weights), peak RSS ${(peakRssBytes() / 2 ** 30).toFixed(2)} GiB`,
  );
  try {
    const feeds = unetFeeds(unet.config, { batch: s.batch, height: s.height, width: s.width });
    const timed = await timeRuns(graph, feeds, flops, compileMs, s.repeats, progress, 'forward');
    return {
      model: s.model,
      batch: s.batch,
      height: s.height,
      width: s.width,
      threads: s.threads,
      prepacking: s.prepacking,
      optimization: s.optimization,
      weightLoading,
      weightBytes: builder.weightBytes(),
      weightDtype: [...dtypes].join('+'),
      loadMs,
      segments: graph.segmentCount,
      unet: timed,
      flopsTotal: counted.total,
      flopsInvariant: counted.invariant,
      ...(conv ? { conv, ratioToConv: timed.gflops / conv.gflops } : {}),
      peakRssBytes: peakRssBytes(),
    };
  } finally {
    await graph.dispose();
    await unet.dispose();
  }
}
