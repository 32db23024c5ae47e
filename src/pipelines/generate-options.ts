// The options of generate(), as diffusers' __call__ takes them, checked up front with errors that name
// the option, what was expected and what was found.
import type { Tensor } from '../io/tensor.js';
import type { SchedulerName } from '../schedulers/scheduler.js';

export interface StepProgress {
  /** 0-based step index and the number of steps. */
  step: number;
  steps: number;
  timestep: number;
  /** Milliseconds this step took (UNet + guidance + scheduler). */
  ms: number;
  /** The UNet output of this step before guidance ([uncond, cond] halves when guidance is on). */
  noisePred: Tensor;
  /** Latents after the scheduler step. */
  latents: Tensor;
}

export interface GenerateOptions {
  prompt: string | string[];
  negativePrompt?: string | string[];
  numInferenceSteps?: number;
  /** Classifier-free guidance weight; <= 1 turns guidance off. */
  guidanceScale?: number;
  /** Seed of the latent noise (torch-compatible CPU generator). Random when absent. */
  seed?: number;
  height?: number;
  width?: number;
  /** Initial noise [B·n, C, h, w], used instead of drawing it (still scaled by init_noise_sigma). */
  latents?: Tensor;
  numImagesPerPrompt?: number;
  outputType?: 'image' | 'latent';
  /** Overrides the scheduler built from the checkpoint's scheduler_config.json. */
  scheduler?: SchedulerName;
  /** DDIM's eta (0 = deterministic). */
  eta?: number;
  onStep?: (p: StepProgress) => void;
  /** SDXL micro-conditioning, in pixels (default: the output size, crop (0, 0)). */
  originalSize?: [number, number];
  cropsCoordsTopLeft?: [number, number];
  targetSize?: [number, number];
  /** Precomputed text conditioning, in place of prompts (as diffusers' prompt_embeds). */
  promptEmbeds?: Tensor;
  negativePromptEmbeds?: Tensor;
  pooledPromptEmbeds?: Tensor;
  negativePooledPromptEmbeds?: Tensor;
}

export interface GenerateResult {
  /** [N, 3, H, W] in [0, 1] (outputType 'image'). */
  images?: Tensor;
  /** Final latents [N, C, h, w] (before VAE scaling). */
  latents: Tensor;
  seed: number;
  timesteps: number[];
  timings: { encodeMs: number; denoiseMs: number; decodeMs: number; stepMs: number[] };
}

export function checkSize(name: 'height' | 'width', v: number, multiple: number): void {
  if (!Number.isInteger(v) || v <= 0)
    throw new Error(`${name}: expected a positive integer number of pixels, got ${v}`);
  if (v % multiple !== 0) {
    throw new Error(
      `${name} ${v} is not divisible by ${multiple}; use ${Math.max(multiple, Math.round(v / multiple) * multiple)}`,
    );
  }
}

export function positiveInt(name: string, v: number | undefined, fallback: number): number {
  const x = v ?? fallback;
  if (!Number.isInteger(x) || x < 1) throw new Error(`${name}: expected an integer >= 1, got ${v}`);
  return x;
}

export function asList(what: string, v: string | string[] | undefined, n?: number): string[] | undefined {
  if (v === undefined) return undefined;
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.some((s) => typeof s !== 'string'))
    throw new Error(`${what}: expected a string or a list of strings`);
  if (n !== undefined && list.length === 1 && n > 1) return new Array(n).fill(list[0]);
  if (n !== undefined && list.length !== n)
    throw new Error(`${what}: ${list.length} entries for ${n} prompts`);
  return list;
}

export function randomSeed(): number {
  return Math.floor(Math.random() * 2 ** 31);
}
