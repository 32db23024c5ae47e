// What a rank runs, named by module so that worker threads can load it: parallel/ stays independent of
// models/ (pipelines/ provides the program that builds a UNet graph).
import type { GraphBuilder } from '../graph/builder.js';
import type { ExchangeHooks } from '../graph/hooks.js';
import type { Phase } from './patch-hooks.js';

export interface RankGraphSpec {
  phase: Phase;
  /** Exchange hooks of patch parallelism; absent for naive patches and single ranks. */
  hooks?: ExchangeHooks;
  batch: number;
  /** Latent size of the graph's spatial input. */
  height: number;
  width: number;
}

export interface RankProgram {
  /** Resolutions the model passes through (downsamplings + 1): patch bands align to the coarsest. */
  levels: number;
  /** The graph input cut into patches by naive patch parallelism. */
  spatialInput: string;
  /** The graph output gathered from the ranks. */
  output: string;
  buildGraph(spec: RankGraphSpec): GraphBuilder;
  dispose?(): Promise<void>;
}

/** A module exporting `createRankProgram(args)`, and the JSON-serialisable args to call it with. */
export interface RankProgramRef {
  module: string;
  args: unknown;
}

interface ProgramModule {
  createRankProgram(args: unknown): Promise<RankProgram>;
}

export async function loadRankProgram(ref: RankProgramRef): Promise<RankProgram> {
  const mod = (await import(ref.module)) as Partial<ProgramModule>;
  if (typeof mod.createRankProgram !== 'function') {
    throw new Error(`rank program ${ref.module}: it does not export createRankProgram(args)`);
  }
  return mod.createRankProgram(ref.args);
}
