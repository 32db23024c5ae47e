// One row of `bench vae`: the VAE decode of one image size, on one rank with T threads (AutoencoderKL.decode
// in this process) or split in row bands across R ranks (DistriConfig.splitVaeDecode's pool).
import { performance } from 'node:perf_hooks';
import type { Tensor } from '../io/tensor.js';
import { AutoencoderKL, buildVaeDecoderGraph } from '../models/autoencoder-kl.js';
import { distriConfig } from '../parallel/config.js';
import type { RankPool } from '../parallel/rank-pool.js';
import { launchVaeDecodePool } from '../pipelines/vae-rank-program.js';
import { Generator, randn } from '../schedulers/random.js';
import { countFlops } from './flops.js';
import { sampleProcessPss } from './isolate.js';
import { median, peakRssBytes } from './table.js';
import type { Progress } from './unet-row.js';

export interface VaeRowSpec {
  vaeDir: string;
  batch: number;
  /** Pixels. */
  height: number;
  width: number;
  ranks: number;
  threadsPerRank: number;
  /** Timed decodes after one untimed one. */
  repeats: number;
  timeoutMs: number;
}

export interface VaeRowResult {
  /** Loading the VAE (one rank) or launching the ranks, which compiles their graphs. */
  launchMs: number;
  firstMs: number;
  decodesMs: number[];
  medianMs: number;
  /** Split rows, medians over the timed decodes: bytes all ranks publish, and the slowest rank's waits. */
  bytesPerDecode: number;
  waitMs: number;
  /** Split rows: each rank's median time inside session.run, fastest and slowest rank. */
  computeMs?: [number, number];
  /** FLOPs of one decode (the whole batch and image), and their rate over the median decode. */
  flops: number;
  gflops: number;
  peakRssBytes: number;
}

async function timeDecodes(
  decode: () => Promise<unknown>,
  repeats: number,
  progress: Progress,
): Promise<{ firstMs: number; decodesMs: number[] }> {
  let t0 = performance.now();
  await decode();
  const firstMs = performance.now() - t0;
  progress(`first decode ${(firstMs / 1000).toFixed(2)} s`);
  sampleProcessPss();
  const decodesMs: number[] = [];
  for (let i = 0; i < repeats; i++) {
    t0 = performance.now();
    await decode();
    decodesMs.push(performance.now() - t0);
    progress(`decode ${i + 1}/${repeats} ${(decodesMs[i]! / 1000).toFixed(2)} s`);
    sampleProcessPss();
  }
  return { firstMs, decodesMs };
}

export async function runVaeRow(s: VaeRowSpec, progress: Progress = () => {}): Promise<VaeRowResult> {
  const t0 = performance.now();
  // On one rank this is the model that decodes; for split rows only its config is used here.
  const vae = await AutoencoderKL.fromPretrained(s.vaeDir, { threads: s.threadsPerRank });
  const f = vae.scaleFactor;
  const latents = randomLatents(s, f, vae.config.latentChannels);
  const [, , h, w] = latents.shape as [number, number, number, number];
  const flops = countFlops(
    buildVaeDecoderGraph(vae.config, vae.weights, { batch: s.batch, height: h, width: w }),
  ).total;
  const summary = (t: { decodesMs: number[] }) => {
    const medianMs = median(t.decodesMs);
    return { medianMs, flops, gflops: flops / medianMs / 1e6 };
  };
  if (s.ranks === 1) {
    const launchMs = performance.now() - t0;
    try {
      const t = await timeDecodes(() => vae.decode(latents), s.repeats, progress);
      return { launchMs, ...t, ...summary(t), bytesPerDecode: 0, waitMs: 0, peakRssBytes: peakRssBytes() };
    } finally {
      await vae.dispose();
    }
  }
  await vae.dispose();
  const config = distriConfig({
    height: s.height,
    width: s.width,
    ranks: s.ranks,
    threadsPerRank: s.threadsPerRank,
    timeoutMs: s.timeoutMs,
  });
  let pool: RankPool | undefined;
  try {
    pool = await launchVaeDecodePool(s.vaeDir, config, s.batch);
    const launchMs = performance.now() - t0;
    progress(`${s.ranks} ranks ready in ${(launchMs / 1000).toFixed(1)} s`);
    const p = pool;
    const t = await timeDecodes(() => p.step(p.stats.length, { latents }), s.repeats, progress);
    const timed = p.stats.slice(1);
    const perRank = (r: number) => median(timed.map((st) => st.perRank.find((x) => x.rank === r)!.computeMs));
    const compute = Array.from({ length: s.ranks }, (_, r) => perRank(r));
    return {
      launchMs,
      ...t,
      ...summary(t),
      bytesPerDecode: median(timed.map((st) => st.perRank.reduce((a, r) => a + r.bytesPublished, 0))),
      waitMs: median(timed.map((st) => Math.max(...st.perRank.map((r) => r.waitMs)))),
      computeMs: [Math.min(...compute), Math.max(...compute)],
      peakRssBytes: peakRssBytes(),
    };
  } finally {
    await pool?.close();
  }
}

function randomLatents(s: VaeRowSpec, f: number, channels: number): Tensor {
  if (s.height % f !== 0 || s.width % f !== 0) {
    throw new Error(`bench vae: ${s.height}x${s.width} is not a multiple of the VAE's factor ${f}`);
  }
  const shape = [s.batch, channels, s.height / f, s.width / f];
  return { data: randn(shape, new Generator(1)), shape };
}
