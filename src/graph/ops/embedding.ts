import type { SymTensor } from '../builder.js';
import { fail, fmt } from './common.js';
import { cos, mul, sin } from './elementwise.js';
import { concat, reshape } from './shape.js';

export interface SinusoidalOptions {
  flipSinToCos: boolean;
  downscaleFreqShift: number;
  scale?: number;
  maxPeriod?: number;
}

/**
 * Frequencies exactly as diffusers' get_timestep_embedding computes them in float32:
 * exp(-ln(maxPeriod) · i / (half − shift)).
 */
export function sinusoidalFrequencies(
  dim: number,
  downscaleFreqShift: number,
  maxPeriod = 10000,
): Float32Array {
  const half = Math.floor(dim / 2);
  const f = Math.fround;
  const c = f(-Math.log(maxPeriod));
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) out[i] = f(Math.exp(f(f(c * i) / (half - downscaleFreqShift))));
  return out;
}

/** The sinusoidal timestep embedding of [N] float timesteps: [N, dim]. */
export function sinusoidalEmbedding(t: SymTensor, dim: number, opts: SinusoidalOptions): SymTensor {
  if (t.rank !== 1) fail('TimestepEmbedding', t, `timesteps must be 1-D, got ${fmt(t.shape)}`);
  if (dim % 2 !== 0) fail('TimestepEmbedding', t, `odd embedding size ${dim} is not supported`);
  const g = t.graph;
  const half = dim / 2;
  const freqs = g.constant(
    sinusoidalFrequencies(dim, opts.downscaleFreqShift, opts.maxPeriod),
    [1, half],
    'freqs',
  );
  let args = mul(reshape(t, [t.dim(0), 1]), freqs);
  if (opts.scale !== undefined && opts.scale !== 1) args = mul(args, opts.scale);
  const s = sin(args);
  const c = cos(args);
  return concat(opts.flipSinToCos ? [c, s] : [s, c], 1);
}
