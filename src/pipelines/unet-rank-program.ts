// The program each rank runs for a patch-parallel UNet: models/ and parallel/ meet here.
import { UNet2DConditionModel } from '../models/unet-2d-condition.js';
import type { RankProgram } from '../parallel/program.js';

export interface UNetRankProgramArgs {
  modelDir: string;
  variant?: string;
  contextLength?: number;
}

export async function createRankProgram(args: unknown): Promise<RankProgram> {
  const a = args as UNetRankProgramArgs;
  const unet = await UNet2DConditionModel.fromPretrained(a.modelDir, a.variant ? { variant: a.variant } : {});
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
