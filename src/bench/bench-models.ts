// What a benchmark runs on: a preset (random weights for a real config), a config.json (random weights), or
// a diffusers UNet or VAE folder (its own weights). Also the host facts every report carries.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { basename, dirname, join } from 'node:path';
import ort from 'onnxruntime-node';
import { type JsonObject, readJson } from '../io/diffusers-folder.js';
import { isPresetName, PRESETS } from './presets.js';
import { createRandomModel, type RandomModelKind, type RandomWeightDtype } from './random-weights.js';
import type { Progress } from './unet-row.js';

export interface WeightOptions {
  dtype: RandomWeightDtype;
  seed: number;
  /** Keep generated weights here and reuse them (default: temp folders removed at exit). */
  cacheDir?: string;
}

export interface BenchModel {
  /** Short name for tables: the preset, or the folder / file given. */
  name: string;
  dir: string;
  /** Whether the weights are random (generated for this run or taken from the cache). */
  random: boolean;
  weightBytes?: number;
  /** The config's sample_size in pixels. */
  defaultHeight: number;
  defaultWidth: number;
  defaultBatch?: number;
  cleanup(): Promise<void>;
}

/** The last two parts of a path, without a trailing config.json: `sdxl-tiny/unet`. */
function shortName(path: string): string {
  const p = basename(path) === 'config.json' ? dirname(path) : path;
  return join(basename(dirname(p)), basename(p));
}

/** A config's sample_size in pixels: a UNet's counts latent pixels (8 each), a VAE's image pixels. */
function sampleSizePixels(json: JsonObject, kind: RandomModelKind): [number, number] {
  const s = json.sample_size ?? (kind === 'unet' ? 64 : 512);
  const [h, w] = Array.isArray(s) ? s : [s, s];
  const f = kind === 'unet' ? 8 : 1;
  return [Number(h) * f, Number(w) * f];
}

/**
 * Resolves `spec` (sd15, sdxl, a config.json, or a model folder) to a UNet or a VAE, writing random weights
 * where needed.
 */
export async function resolveModel(
  spec: string,
  weights: WeightOptions,
  progress: Progress,
  kind: RandomModelKind = 'unet',
): Promise<BenchModel> {
  if (!isPresetName(spec) && existsSync(spec) && statSync(spec).isDirectory()) {
    const json = await readJson(join(spec, 'config.json'));
    const [h, w] = sampleSizePixels(json, kind);
    return {
      name: spec,
      dir: spec,
      random: false,
      defaultHeight: h,
      defaultWidth: w,
      cleanup: async () => {},
    };
  }
  let source: { json: JsonObject; label: string };
  let defaultBatch: number | undefined;
  if (isPresetName(spec)) {
    const preset = PRESETS[spec];
    source = {
      json: kind === 'unet' ? preset.unetConfig : preset.vaeConfig,
      label: `${preset.repo} ${kind}/config.json`,
    };
    if (kind === 'unet') defaultBatch = preset.batch;
  } else if (spec.endsWith('.json')) {
    source = { json: await readJson(spec), label: spec };
  } else {
    const what = kind === 'unet' ? 'UNet' : 'VAE';
    throw new Error(
      `model '${spec}': expected sd15, sdxl, a ${what} config.json, or a diffusers ${what} folder`,
    );
  }
  let next = 0;
  const model = await createRandomModel(kind, source, {
    dtype: weights.dtype,
    seed: weights.seed,
    ...(weights.cacheDir ? { cacheDir: weights.cacheDir } : {}),
    onProgress: (done, total) => {
      if (total > 1e8 && done / total >= next) {
        progress(
          `${spec}: writing random ${weights.dtype} weights ${Math.floor((100 * done) / total)}% of ${(total / 1e9).toFixed(2)} GB`,
        );
        next += 0.25;
      }
    },
  });
  if (model.reused) progress(`${spec}: reusing random weights in ${model.dir}`);
  const [h, w] = sampleSizePixels(source.json, kind);
  return {
    name: isPresetName(spec) ? spec : shortName(spec),
    dir: model.dir,
    random: true,
    weightBytes: model.bytes,
    defaultHeight: h,
    defaultWidth: w,
    ...(defaultBatch ? { defaultBatch } : {}),
    cleanup: model.cleanup,
  };
}

export interface HostInfo {
  cpu: string;
  cores: number;
  /** SIMD flags that decide MLAS kernels (from /proc/cpuinfo). */
  simd: string[];
  memoryBytes: number;
  node: string;
  onnxruntime: string;
}

export function hostInfo(): HostInfo {
  let simd: string[] = [];
  try {
    const flags = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.split(/\s+/) ?? [];
    simd = ['avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_tile'].filter((f) =>
      flags.includes(f),
    );
  } catch {
    // not Linux: leave it empty
  }
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: availableParallelism(),
    simd,
    memoryBytes: totalmem(),
    node: process.version,
    onnxruntime: ort.env.versions.node ?? 'unknown',
  };
}
