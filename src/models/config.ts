// Strict reading of diffusers / transformers config.json files: every key a model uses is type-checked,
// unsupported values are rejected with the file and key named, and keys nobody read are listed.
import type { JsonObject } from '../io/diffusers-folder.js';

// Bookkeeping keys every saved config carries.
const META_KEYS = new Set([
  '_class_name',
  '_diffusers_version',
  '_name_or_path',
  'architectures',
  'transformers_version',
  'model_type',
  'torch_dtype',
  '_commit_hash',
  '_use_default_values',
]);

export class ConfigReader {
  private readonly read = new Set<string>();

  constructor(
    readonly file: string,
    private readonly json: JsonObject,
  ) {}

  private raw(key: string): unknown {
    this.read.add(key);
    return this.json[key];
  }

  has(key: string): boolean {
    return this.json[key] !== undefined && this.json[key] !== null;
  }

  private bad(key: string, expected: string, v: unknown): never {
    throw new Error(`${this.file}: "${key}" must be ${expected}, found ${JSON.stringify(v)}`);
  }

  number(key: string, fallback?: number): number {
    const v = this.raw(key);
    if (v === undefined || v === null) {
      if (fallback === undefined) this.bad(key, 'a number', v);
      return fallback;
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) this.bad(key, 'a number', v);
    return v;
  }

  int(key: string, fallback?: number): number {
    const v = this.number(key, fallback);
    if (!Number.isInteger(v)) this.bad(key, 'an integer', v);
    return v;
  }

  bool(key: string, fallback?: boolean): boolean {
    const v = this.raw(key);
    if (v === undefined || v === null) {
      if (fallback === undefined) this.bad(key, 'true or false', v);
      return fallback;
    }
    if (typeof v !== 'boolean') this.bad(key, 'true or false', v);
    return v;
  }

  string<T extends string>(key: string, allowed: readonly T[], fallback?: T): T {
    const v = this.raw(key);
    if (v === undefined || v === null) {
      if (fallback === undefined) this.bad(key, `one of ${allowed.join(', ')}`, v);
      return fallback;
    }
    if (typeof v !== 'string' || !allowed.includes(v as T)) {
      throw new Error(
        `${this.file}: unsupported "${key}" ${JSON.stringify(v)}; supported: ${allowed.join(', ')}`,
      );
    }
    return v as T;
  }

  optionalString(key: string): string | undefined {
    const v = this.raw(key);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') this.bad(key, 'a string', v);
    return v;
  }

  /** An int or a list of ints, broadcast to `n` entries. */
  intPerBlock(key: string, n: number, fallback?: number): number[] {
    const v = this.raw(key);
    if (v === undefined || v === null) {
      if (fallback === undefined) this.bad(key, `an integer or a list of ${n}`, v);
      return new Array(n).fill(fallback);
    }
    if (typeof v === 'number' && Number.isInteger(v)) return new Array(n).fill(v);
    if (Array.isArray(v) && v.length === n && v.every((x) => Number.isInteger(x))) return v as number[];
    this.bad(key, `an integer or a list of ${n} integers`, v);
  }

  intList(key: string, fallback?: number[]): number[] {
    const v = this.raw(key);
    if (v === undefined || v === null) {
      if (fallback === undefined) this.bad(key, 'a list of integers', v);
      return fallback;
    }
    if (!Array.isArray(v) || !v.every((x) => Number.isInteger(x))) this.bad(key, 'a list of integers', v);
    return v as number[];
  }

  stringList<T extends string>(key: string, allowed: readonly T[]): T[] {
    const v = this.raw(key);
    if (!Array.isArray(v)) this.bad(key, 'a list of strings', v);
    for (const x of v) {
      if (typeof x !== 'string' || !allowed.includes(x as T)) {
        throw new Error(
          `${this.file}: unsupported entry ${JSON.stringify(x)} in "${key}"; supported: ${allowed.join(', ')}`,
        );
      }
    }
    return v as T[];
  }

  /** Requires a key to be absent, null, or one of the values we implement. */
  expect(key: string, ...accepted: unknown[]): void {
    const v = this.raw(key);
    if (v === undefined || v === null) return;
    if (!accepted.some((a) => JSON.stringify(a) === JSON.stringify(v))) {
      throw new Error(
        `${this.file}: "${key}" = ${JSON.stringify(v)} is not supported (supported: ${accepted.map((a) => JSON.stringify(a)).join(', ')})`,
      );
    }
  }

  /** Marks keys as known but irrelevant to inference (dropout, sample_size, …). */
  ignore(...keys: string[]): void {
    for (const k of keys) this.read.add(k);
  }

  /** Keys present in the file that no code read. */
  ignoredKeys(): string[] {
    return Object.keys(this.json).filter((k) => !this.read.has(k) && !META_KEYS.has(k));
  }
}
