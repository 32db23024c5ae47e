// diffusers embeddings.py: Timesteps (sinusoidal) and TimestepEmbedding (linear → SiLU → linear).
import type { GraphBuilder, SymTensor } from '../graph/builder.js';
import * as F from '../graph/functional.js';
import { linear } from './layers.js';

export interface TimestepsSpec {
  channels: number;
  flipSinToCos: boolean;
  freqShift: number;
}

export function timesteps(t: SymTensor, s: TimestepsSpec): SymTensor {
  return F.sinusoidalEmbedding(t, s.channels, {
    flipSinToCos: s.flipSinToCos,
    downscaleFreqShift: s.freqShift,
  });
}

export function timestepEmbedding(b: GraphBuilder, name: string, x: SymTensor, dim: number): SymTensor {
  return b.scope(name, () => linear(b, 'linear_2', F.silu(linear(b, 'linear_1', x, dim)), dim));
}
