// The VAE decode split across the ranks (DESIGN.md §2: distrifuser has every rank decode the whole
// image). Each rank decodes one row band of the image through the same exchange hooks as the UNet, every
// exchange synchronous (full_sync): conv halos, the mid-block attention's K/V and GroupNorm statistics are
// the whole image's, so the gathered image equals the single-device decode.
import { AutoencoderKL, buildVaeDecoderGraph } from '../models/autoencoder-kl.js';
import type { DistriConfig } from '../parallel/config.js';
import type { RankProgram } from '../parallel/program.js';
import { RankPool, type RankPoolOptions } from '../parallel/rank-pool.js';

export interface VaeRankProgramArgs {
  vaeDir: string;
  variant?: string;
}

/**
 * The bands are cut in image pixels: the pool's level 0 is the decoded image and its coarsest level the
 * latent, so that the graph's spatial sizes are the pool's sizes divided by the VAE's scale factor.
 */
export async function createRankProgram(args: unknown): Promise<RankProgram> {
  const a = args as VaeRankProgramArgs;
  const vae = await AutoencoderKL.fromPretrained(a.vaeDir, a.variant ? { variant: a.variant } : {});
  const f = vae.scaleFactor;
  return {
    levels: vae.config.blockOutChannels.length,
    spatialInput: 'latents',
    output: 'sample',
    buildGraph: (spec) =>
      buildVaeDecoderGraph(vae.config, vae.weights, {
        batch: spec.batch,
        height: spec.height / f,
        width: spec.width / f,
        ...(spec.hooks ? { hooks: spec.hooks } : {}),
      }),
    dispose: () => vae.dispose(),
  };
}

function vaeRankProgramModule(): string {
  const ext = import.meta.url.endsWith('.ts') ? 'ts' : 'js';
  return new URL(`./vae-rank-program.${ext}`, import.meta.url).href;
}

/**
 * Launches the ranks of a split VAE decode of `batch` latents for `config`'s image size. Each rank holds its
 * own copy of the VAE weights (335 MB for SDXL's): little beside a UNet.
 */
export function launchVaeDecodePool(
  vaeDir: string,
  config: DistriConfig,
  batch: number,
  options: Pick<RankPoolOptions, 'engine' | 'fault'> & { variant?: string } = {},
): Promise<RankPool> {
  const { variant, ...pool } = options;
  return RankPool.launch({
    ...pool,
    // Only the row bands of patch parallelism apply to a decode, and none of its staleness.
    config: { ...config, mode: 'full_sync', parallelism: 'patch', lowMemory: false },
    program: {
      module: vaeRankProgramModule(),
      args: { vaeDir, ...(variant ? { variant } : {}) } satisfies VaeRankProgramArgs,
    },
    classifierFreeGuidance: false,
    batch,
    latentHeight: config.height,
    latentWidth: config.width,
  });
}
