import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { WeightStore } from './weights.js';

export type JsonObject = Record<string, unknown>;

// Python's json writes -Infinity, Infinity and NaN (diffusers saves lambda_min_clipped = -inf). Out-of-range
// literals parse to ±Infinity in JSON.parse; NaN becomes null. Strings are left alone.
function pythonJson(text: string): string {
  return text.replace(
    /("(?:[^"\\]|\\.)*")|(-?)Infinity\b|\bNaN\b/g,
    (m, str: string | undefined, sign: string | undefined) => {
      if (str) return str;
      if (m === 'NaN') return 'null';
      return `${sign ?? ''}1e400`;
    },
  );
}

export async function readJson(path: string): Promise<JsonObject> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new Error(`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let v: unknown;
  try {
    v = JSON.parse(pythonJson(text));
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new Error(`${path}: expected a JSON object`);
  return v as JsonObject;
}

export interface LoadComponentOptions {
  /** Weight variant, e.g. 'fp16' for `diffusion_pytorch_model.fp16.safetensors`. */
  variant?: string;
  /** Weights indexed already (e.g. an aligned shared copy): only config.json is read from the folder. */
  weights?: WeightStore;
}

export interface Component {
  dir: string;
  configPath: string;
  config: JsonObject;
  weights: WeightStore;
}

const WEIGHT_STEMS = ['diffusion_pytorch_model', 'model'];

// diffusers' _add_variant puts the variant before the last extension:
// diffusion_pytorch_model.fp16.safetensors, diffusion_pytorch_model.safetensors.index.fp16.json.
function candidates(variant: string | undefined): string[] {
  const v = variant ? `.${variant}` : '';
  return [
    ...WEIGHT_STEMS.map((s) => `${s}${v}.safetensors`),
    ...WEIGHT_STEMS.map((s) => `${s}.safetensors.index${v}.json`),
  ];
}

/** The safetensors files of a diffusers / transformers component folder (single file or sharded). */
export async function findWeightFiles(dir: string, variant?: string): Promise<string[]> {
  const tryVariant = async (v: string | undefined): Promise<string[] | undefined> => {
    for (const name of candidates(v)) {
      const p = join(dir, name);
      if (!existsSync(p)) continue;
      if (!name.endsWith('.index.json')) return [p];
      const index = await readJson(p);
      const map = index.weight_map;
      if (typeof map !== 'object' || map === null) throw new Error(`${p}: missing "weight_map"`);
      const files = [...new Set(Object.values(map as Record<string, unknown>).map(String))].sort();
      const missing = files.filter((f) => !existsSync(join(dir, f)));
      if (missing.length > 0) throw new Error(`${p}: shard file(s) missing: ${missing.join(', ')}`);
      return files.map((f) => join(dir, f));
    }
    return undefined;
  };
  const found = (await tryVariant(variant)) ?? (variant === undefined ? await tryVariant('fp16') : undefined);
  if (found) return found;
  let listing: string[] = [];
  try {
    listing = await readdir(dir);
  } catch {
    throw new Error(`${dir}: folder not found`);
  }
  const bins = listing.filter((f) => f.endsWith('.bin') || f.endsWith('.ckpt') || f.endsWith('.pt'));
  const expected = candidates(variant).join(', ');
  throw new Error(
    `${dir}: no safetensors weights found (looked for ${expected}); found ${listing.length ? listing.join(', ') : 'an empty folder'}${
      bins.length ? '. PyTorch pickle files are not supported: convert them to safetensors' : ''
    }`,
  );
}

/** Reads `config.json` and indexes the weights of one component folder (nothing big is read yet). */
export async function loadComponent(dir: string, options: LoadComponentOptions = {}): Promise<Component> {
  const configPath = join(dir, 'config.json');
  const config = await readJson(configPath);
  if (options.weights) return { dir, configPath, config, weights: options.weights };
  const files = await findWeightFiles(dir, options.variant);
  const weights = await WeightStore.fromFiles(files.length === 1 ? files[0]! : dir, files);
  return { dir, configPath, config, weights };
}
