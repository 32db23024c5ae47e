// The program each rank runs for a patch-parallel UNet: models/ and parallel/ meet here.
import { tmpdir } from 'node:os';
import { nchwcBlockSize, nchwcRelayout } from '../graph/nchwc.js';
import { packLinearWeights } from '../graph/packed-gemm.js';
import { type AlignedWeightsIndex, alignWeights } from '../io/aligned-weights.js';
import { type WeightEntry, WeightStore } from '../io/weights.js';
import { UNet2DConditionModel } from '../models/unet-2d-condition.js';
import type { RankProgram } from '../parallel/program.js';
import { RankPool, type RankPoolOptions } from '../parallel/rank-pool.js';

export interface UNetRankProgramArgs {
  modelDir: string;
  variant?: string;
  contextLength?: number;
  /** A float32, page-aligned copy of the weights in shared memory, mapped by every rank's sessions. */
  aligned?: AlignedWeightsIndex;
}

export async function createRankProgram(args: unknown): Promise<RankProgram> {
  const a = args as UNetRankProgramArgs;
  const unet = await UNet2DConditionModel.fromPretrained(a.modelDir, {
    ...(a.variant ? { variant: a.variant } : {}),
    ...(a.aligned ? { weightStore: WeightStore.fromIndex(a.aligned.source, a.aligned.entries) } : {}),
  });
  return {
    levels: unet.config.downBlockTypes.length,
    spatialInput: 'sample',
    output: 'out_sample',
    buildGraph: (spec) =>
      unet.buildGraph({
        batch: spec.batch,
        height: spec.height,
        width: spec.width,
        contextLength: a.contextLength ?? 77,
        ...(spec.hooks ? { hooks: spec.hooks } : {}),
        name: `unet-${spec.phase}`,
      }),
    dispose: () => unet.dispose(),
  };
}

/** Where workers import this program from (the .ts source under tsx, the .js build otherwise). */
export function unetRankProgramModule(): string {
  const ext = import.meta.url.endsWith('.ts') ? 'ts' : 'js';
  return new URL(`./unet-rank-program.${ext}`, import.meta.url).href;
}

/** A rank pool running a UNet; `sharedWeights`: its ranks map one shared weight copy. */
export interface UNetPool {
  pool: RankPool;
  sharedWeights: boolean;
  /** The NCHWc block the shared conv filters were reordered for (0: plain OIHW). */
  nchwcBlock: number;
  /** Whether the shared linear weights come with ORT's packed GEMM copies (see packLinearWeights). */
  packedGemm: boolean;
}

const isLinearWeight = (e: WeightEntry): boolean => e.shape.length === 2;

/**
 * Launches the ranks of a UNet. With several ranks on CPU, the weights are first copied once, as float32
 * at page-aligned offsets, into shared memory: every session of every rank then maps that one copy
 * (prepacking off) instead of holding its own: that is what lets two SDXL ranks run in 24 GiB (at 768², or
 * 1024² with DistriConfig.lowMemory).
 */
export async function launchUNetPool(
  unet: UNet2DConditionModel,
  unetDir: string,
  options: Omit<RankPoolOptions, 'program'> & {
    variant?: string;
    shareWeights?: boolean;
    nchwcWeights?: boolean;
    packedGemmWeights?: boolean;
  },
): Promise<UNetPool> {
  const { variant, shareWeights, nchwcWeights, packedGemmWeights, ...poolOptions } = options;
  const cpuOnly = poolOptions.config.devices.every((d) => d === 'cpu');
  const share = shareWeights ?? (cpuOnly && poolOptions.config.ranks > 1);
  // The shared copy holds conv filters already reordered for ORT's NCHWc kernel, which the 'extended' level
  // would not give the ranks. Measured, two ranks at 768²: SD 1.5 async step 35.6 s vs 39.8 s; SDXL neutral.
  const block = share && cpuOnly && nchwcWeights !== false ? await nchwcBlockSize() : 0;
  // Packed GEMM weights: the linear weights and their packed copies go to files on disk (the unpacked halves
  // are read once, at load, and may leave the page cache); the rest of the copy goes beside them, since a
  // session maps all its weight files through hard links in one folder.
  const packGemm = share && cpuOnly && packedGemmWeights !== false;
  // Packing first: the copy written last stays in the page cache as written, in 2 MiB folios.
  const packed = packGemm ? await packLinearWeights(unet.weights, isLinearWeight, tmpdir()) : undefined;
  const aligned = share
    ? await alignWeights(unet.weights, {
        ...(block > 0 ? { relayout: nchwcRelayout(block) } : {}),
        ...(packGemm ? { include: (e: WeightEntry) => !isLinearWeight(e), dir: tmpdir() } : {}),
      }).catch(async (e) => {
        await packed?.dispose();
        throw e;
      })
    : undefined;
  const dispose = async () => {
    await aligned?.dispose();
    await packed?.dispose();
  };
  try {
    const pool = await RankPool.launch({
      ...poolOptions,
      program: {
        module: unetRankProgramModule(),
        args: {
          modelDir: unetDir,
          ...(variant ? { variant } : {}),
          ...(aligned
            ? {
                aligned: {
                  ...aligned.index,
                  entries: [...aligned.index.entries, ...(packed?.entries ?? [])],
                },
              }
            : {}),
        } satisfies UNetRankProgramArgs,
      },
      // Private prepacking and the 'all' level's NCHWc weight reordering would each give every session its
      // own copy of the weights again; measured: 2 ranks of SD 1.5 at 256², PSS 5.2 GB shared vs 12.8 GB.
      // Prepacking stays on with packed GEMM weights: ORT then maps their packed copies instead.
      ...(aligned
        ? {
            engine: {
              optimization: 'extended' as const,
              ...poolOptions.engine,
              prepacking: packed !== undefined,
              memoryPattern: false,
              weights: 'mmap' as const,
            },
          }
        : {}),
    });
    // Every session has mapped the copy by now: deleting its name leaves the memory to the mappings, and
    // gives it back to the system however this process ends (a killed run would otherwise leak it).
    await dispose();
    return {
      pool,
      sharedWeights: aligned !== undefined,
      nchwcBlock: block,
      packedGemm: packed !== undefined,
    };
  } catch (e) {
    await dispose();
    throw e;
  }
}
