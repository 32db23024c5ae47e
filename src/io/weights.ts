import { basename } from 'node:path';
import { DTYPE_BYTES, FLOAT_DTYPES, type SafetensorsDtype, SafetensorsFile } from './safetensors.js';
import { formatShape } from './tensor.js';

/** Where one named weight lives: a byte range inside a safetensors file (nothing is read yet). */
export interface WeightEntry {
  key: string;
  dtype: SafetensorsDtype;
  shape: number[];
  file: string;
  offset: number;
  byteLength: number;
  /** How the bytes are laid out when not plain row-major (e.g. 'OIHWBiBo8', a conv filter reordered for NCHWc). */
  layout?: string;
  /** ORT pre-packed copies of the weight in the same file (see ExternalLocation.prepacked). */
  prepacked?: string[];
}

// Legacy key names of older checkpoints, renamed on load as diffusers does
// (_convert_deprecated_attention_blocks): query→to_q, key→to_k, value→to_v, proj_attn→to_out.0.
const LEGACY_RENAMES: ReadonlyArray<[RegExp, string]> = [
  [/\.query\.(weight|bias)$/, '.to_q.$1'],
  [/\.key\.(weight|bias)$/, '.to_k.$1'],
  [/\.value\.(weight|bias)$/, '.to_v.$1'],
  [/\.proj_attn\.(weight|bias)$/, '.to_out.0.$1'],
];

// Buffers some checkpoints carry that current code recomputes (transformers ignores position_ids).
const IGNORED_KEYS: readonly RegExp[] = [/(^|\.)position_ids$/];

export function normaliseKey(key: string): string | undefined {
  if (IGNORED_KEYS.some((r) => r.test(key))) return undefined;
  for (const [re, to] of LEGACY_RENAMES) if (re.test(key)) return key.replace(re, to);
  return key;
}

/**
 * The weights of one model component: a name → byte range index over one or more safetensors files.
 * Lookups are strict: a missing name, an unsupported dtype or a wrong shape is an error naming the file.
 */
export class WeightStore {
  private readonly used = new Set<string>();

  constructor(
    /** Folder or file the weights came from, for error messages. */
    readonly source: string,
    private readonly entries: ReadonlyMap<string, WeightEntry>,
  ) {}

  static async fromFiles(
    source: string,
    files: readonly string[],
    onlyKeys?: ReadonlySet<string>,
  ): Promise<WeightStore> {
    const entries = new Map<string, WeightEntry>();
    for (const path of files) {
      const f = await SafetensorsFile.open(path);
      try {
        for (const e of f.entries.values()) {
          if (onlyKeys && !onlyKeys.has(e.name)) continue;
          const key = normaliseKey(e.name);
          if (key === undefined) continue;
          const prev = entries.get(key);
          if (prev) {
            throw new Error(`${path}: tensor '${key}' is also in ${prev.file}; each weight must appear once`);
          }
          entries.set(key, {
            key,
            dtype: e.dtype,
            shape: e.shape,
            file: path,
            offset: e.offset,
            byteLength: e.byteLength,
          });
        }
      } finally {
        await f.close();
      }
    }
    return new WeightStore(source, entries);
  }

  /** A store over entries already indexed elsewhere (an aligned copy, a worker thread's view). */
  static fromIndex(source: string, entries: readonly WeightEntry[]): WeightStore {
    return new WeightStore(source, new Map(entries.map((e) => [e.key, e])));
  }

  /** The raw entry of a key, without shape checks (for copying weights around). */
  entry(key: string): WeightEntry {
    const e = this.entries.get(key);
    if (!e) throw new Error(`${this.source}: missing tensor '${key}'`);
    return e;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  keys(): string[] {
    return [...this.entries.keys()];
  }

  /** Looks up a float weight and checks its shape against what the model config implies. */
  get(key: string, expectedShape: readonly number[]): WeightEntry {
    const e = this.entries.get(key);
    if (!e) {
      throw new Error(
        `${this.source}: missing tensor '${key}' (expected shape ${formatShape(expectedShape)} from config.json)`,
      );
    }
    if (!FLOAT_DTYPES.includes(e.dtype) || e.dtype === 'F64') {
      throw new Error(
        `${basename(e.file)}: tensor '${key}' has unsupported dtype ${e.dtype}; expected F32, F16 or BF16`,
      );
    }
    const same = e.shape.length === expectedShape.length && e.shape.every((d, i) => d === expectedShape[i]);
    if (!same) {
      throw new Error(
        `${e.file}: tensor '${key}' has shape ${formatShape(e.shape)}, but config.json implies ${formatShape(expectedShape)}`,
      );
    }
    this.used.add(key);
    return e;
  }

  /** Keys the model never asked for: a config that does not match the checkpoint. */
  unusedKeys(): string[] {
    return this.keys().filter((k) => !this.used.has(k));
  }

  assertAllUsed(what: string): void {
    const unused = this.unusedKeys();
    if (unused.length > 0) {
      const list = unused.slice(0, 10).join(', ');
      throw new Error(
        `${this.source}: ${unused.length} tensor(s) not used by ${what} (does config.json match the weights?): ${list}${
          unused.length > 10 ? ', …' : ''
        }`,
      );
    }
  }

  totalBytes(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.byteLength;
    return n;
  }
}

export function elementBytes(dtype: SafetensorsDtype): number {
  return DTYPE_BYTES[dtype];
}
