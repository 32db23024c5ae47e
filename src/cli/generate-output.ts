// What `distrifusion generate` writes: file names for several images, and the generation parameters in
// the text AUTOMATIC1111's web UI writes into its PNGs (other tools read that format back).

import type { SchedulerName } from '../schedulers/scheduler.js';
import type { DistriArgs } from './generate-args.js';

/** `out.png` for one image; `out-0.png`, `out-1.png`, … for several. */
export function outputPaths(out: string, count: number): string[] {
  if (count === 1) return [out];
  const dot = out.lastIndexOf('.');
  return Array.from({ length: count }, (_, i) => `${out.slice(0, dot)}-${i}${out.slice(dot)}`);
}

/** The sampler names of the A1111 UI for our schedulers. */
export function samplerLabel(name: SchedulerName, config: Readonly<Record<string, unknown>>): string {
  const karras = config.use_karras_sigmas === true ? ' Karras' : '';
  switch (name) {
    case 'ddim':
      return 'DDIM';
    case 'euler':
      return `Euler${karras}`;
    case 'dpm-solver':
      return `DPM++ 2M${karras}`;
    case 'pndm':
      return 'PLMS';
    default: {
      const never: never = name;
      return never;
    }
  }
}

export interface ParametersInput {
  prompt: string;
  negativePrompt?: string;
  steps: number;
  sampler: string;
  cfgScale: number;
  seed: number;
  width: number;
  height: number;
  model: string;
  /** Images in the batch and this one's index (written only for batches, as A1111 does). */
  batchSize: number;
  batchPos: number;
  distri?: DistriArgs;
}

/** A1111 quotes a value that contains a comma, colon or quote, so its parser can split the line. */
function quote(v: string): string {
  return /[,:"]/.test(v) ? JSON.stringify(v) : v;
}

/**
 * `<prompt>\nNegative prompt: <neg>\nSteps: 20, Sampler: Euler, CFG scale: 5, Seed: 1234, Size: 1024x1024,
 * Model: name` (A1111's `Size` is width x height); the negative-prompt line only when there is one.
 */
export function parametersText(p: ParametersInput): string {
  const fields: Array<[string, string | number]> = [
    ['Steps', p.steps],
    ['Sampler', p.sampler],
    ['CFG scale', p.cfgScale],
    ['Seed', p.seed],
    ['Size', `${p.width}x${p.height}`],
    ['Model', p.model],
  ];
  if (p.batchSize > 1) fields.push(['Batch size', p.batchSize], ['Batch pos', p.batchPos]);
  if (p.distri) {
    const d = p.distri;
    const parts = [`ranks=${d.ranks}`, `mode=${d.mode}`, `warmup=${d.warmupSteps}`];
    if (d.parallelism !== 'patch') parts.push(`parallelism=${d.parallelism}`, `split=${d.splitScheme}`);
    if (!d.splitBatch) parts.push('split_batch=false');
    fields.push(['DistriFusion', parts.join(', ')]);
  }
  const line = fields.map(([k, v]) => `${k}: ${quote(String(v))}`).join(', ');
  const neg = p.negativePrompt ? `Negative prompt: ${p.negativePrompt}\n` : '';
  return `${p.prompt}\n${neg}${line}`;
}
