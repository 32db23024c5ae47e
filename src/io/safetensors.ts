import { type FileHandle, open, rename, rm } from 'node:fs/promises';
import { basename } from 'node:path';
import {
  bfloatArrayToFloat32,
  float32ToBfloatArray,
  float32ToHalfArray,
  halfArrayToFloat32,
} from './half.js';
import { type AnyTensor, formatShape, type Int64Tensor, numel, type Tensor } from './tensor.js';

export type SafetensorsDtype =
  | 'F64'
  | 'F32'
  | 'F16'
  | 'BF16'
  | 'I64'
  | 'I32'
  | 'I16'
  | 'I8'
  | 'U8'
  | 'BOOL'
  | 'U16'
  | 'U32'
  | 'U64'
  | 'F8_E4M3'
  | 'F8_E5M2';

export const DTYPE_BYTES: Record<SafetensorsDtype, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
  U16: 2,
  U32: 4,
  U64: 8,
  F8_E4M3: 1,
  F8_E5M2: 1,
};

/** dtypes that load as float32 weights or activations. */
export const FLOAT_DTYPES: readonly SafetensorsDtype[] = ['F32', 'F16', 'BF16', 'F64'];

// The reference implementation caps headers at 100 MB; a real SDXL UNet header is ~200 KB.
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
// fs.read moves at most 2 GiB - 1 per call.
const MAX_READ = 0x7fff0000;

export interface SafetensorsEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Absolute byte offset of the first element in the file. */
  offset: number;
  byteLength: number;
}

export class SafetensorsError extends Error {
  constructor(file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = 'SafetensorsError';
  }
}

/**
 * An open safetensors file: the header is parsed and checked up front, tensor data is read lazily by offset,
 * so files larger than 4 GiB and larger than memory work.
 */
export class SafetensorsFile {
  private constructor(
    readonly path: string,
    readonly fileSize: number,
    readonly headerLength: number,
    readonly entries: ReadonlyMap<string, SafetensorsEntry>,
    readonly metadata: Readonly<Record<string, string>>,
    private handle: FileHandle | undefined,
  ) {}

  static async open(path: string): Promise<SafetensorsFile> {
    let handle: FileHandle;
    try {
      handle = await open(path, 'r');
    } catch (e) {
      throw new SafetensorsError(path, `cannot open: ${(e as Error).message}`);
    }
    try {
      const { size } = await handle.stat();
      const header = await parseHeader(path, handle, size);
      return new SafetensorsFile(path, size, header.headerLength, header.entries, header.metadata, handle);
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  get names(): string[] {
    return [...this.entries.keys()];
  }

  entry(name: string): SafetensorsEntry {
    const e = this.entries.get(name);
    if (!e) throw new SafetensorsError(this.path, `no tensor named '${name}'`);
    return e;
  }

  /** The raw little-endian bytes of one tensor. */
  async readBytes(name: string): Promise<Buffer> {
    const e = this.entry(name);
    return this.readRange(e.offset, e.byteLength);
  }

  async readRange(offset: number, length: number): Promise<Buffer> {
    const handle = this.handle;
    if (!handle) throw new SafetensorsError(this.path, 'read after close');
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const n = Math.min(MAX_READ, length - done);
      const { bytesRead } = await handle.read(buf, done, n, offset + done);
      if (bytesRead === 0) {
        throw new SafetensorsError(
          this.path,
          `unexpected end of file reading ${length} bytes at offset ${offset}`,
        );
      }
      done += bytesRead;
    }
    return buf;
  }

  /** One tensor widened to float32 (F32, F16, BF16, F64 stored). */
  async readFloat32(name: string): Promise<Tensor> {
    const e = this.entry(name);
    const bytes = await this.readBytes(name);
    return { data: bytesToFloat32(bytes, e.dtype, `${this.path}: tensor '${name}'`), shape: [...e.shape] };
  }

  async read(name: string): Promise<AnyTensor> {
    const e = this.entry(name);
    if (e.dtype === 'I64') {
      const bytes = await this.readBytes(name);
      const data = new BigInt64Array(numel(e.shape));
      Buffer.from(data.buffer).set(bytes);
      return { data, shape: [...e.shape] } satisfies Int64Tensor;
    }
    if (e.dtype === 'I32') {
      const bytes = await this.readBytes(name);
      const i32 = new Int32Array(numel(e.shape));
      Buffer.from(i32.buffer).set(bytes);
      return { data: BigInt64Array.from(i32, (v) => BigInt(v)), shape: [...e.shape] } satisfies Int64Tensor;
    }
    return this.readFloat32(name);
  }

  async close(): Promise<void> {
    const h = this.handle;
    this.handle = undefined;
    await h?.close();
  }
}

/** Converts stored bytes to float32. Copies, so the result is aligned and owned. */
export function bytesToFloat32(bytes: Uint8Array, dtype: SafetensorsDtype, what: string): Float32Array {
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  switch (dtype) {
    case 'F32': {
      const out = new Float32Array(n);
      new Uint8Array(out.buffer).set(bytes);
      return out;
    }
    case 'F16':
    case 'BF16': {
      const bits = new Uint16Array(n);
      new Uint8Array(bits.buffer).set(bytes);
      return dtype === 'F16' ? halfArrayToFloat32(bits) : bfloatArrayToFloat32(bits);
    }
    case 'F64': {
      const f64 = new Float64Array(n);
      new Uint8Array(f64.buffer).set(bytes);
      return Float32Array.from(f64);
    }
    default:
      throw new Error(`${what}: expected a float dtype (F32, F16, BF16, F64), found ${dtype}`);
  }
}

async function parseHeader(
  path: string,
  handle: FileHandle,
  size: number,
): Promise<{
  headerLength: number;
  entries: Map<string, SafetensorsEntry>;
  metadata: Record<string, string>;
}> {
  if (size < 8) {
    throw new SafetensorsError(path, `truncated: a safetensors file needs at least 8 bytes, found ${size}`);
  }
  const lenBuf = Buffer.alloc(8);
  await handle.read(lenBuf, 0, 8, 0);
  const headerLength64 = lenBuf.readBigUInt64LE(0);
  if (headerLength64 > BigInt(Math.min(MAX_HEADER_BYTES, size - 8))) {
    throw new SafetensorsError(
      path,
      `corrupt or truncated: header length ${headerLength64} exceeds ${
        headerLength64 > BigInt(MAX_HEADER_BYTES)
          ? `the ${MAX_HEADER_BYTES}-byte limit`
          : `the file (${size} bytes)`
      }`,
    );
  }
  const headerLength = Number(headerLength64);
  const headerBuf = Buffer.alloc(headerLength);
  await handle.read(headerBuf, 0, headerLength, 8);
  let json: unknown;
  try {
    json = JSON.parse(headerBuf.toString('utf8'));
  } catch (e) {
    throw new SafetensorsError(path, `corrupt header: not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new SafetensorsError(path, 'corrupt header: expected a JSON object');
  }
  const dataStart = 8 + headerLength;
  const dataSize = size - dataStart;
  const entries = new Map<string, SafetensorsEntry>();
  let metadata: Record<string, string> = {};
  const ranges: Array<[number, number, string]> = [];
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(path, value);
      continue;
    }
    const info = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const dtype = info?.dtype;
    if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES)) {
      throw new SafetensorsError(
        path,
        `tensor '${name}': unsupported dtype ${JSON.stringify(dtype)}; expected one of ${Object.keys(DTYPE_BYTES).join(', ')}`,
      );
    }
    const shape = info.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new SafetensorsError(path, `tensor '${name}': shape must be a list of non-negative integers`);
    }
    const offsets = info.data_offsets;
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
      offsets[1] < offsets[0]
    ) {
      throw new SafetensorsError(
        path,
        `tensor '${name}': data_offsets must be [begin, end] with 0 <= begin <= end`,
      );
    }
    const [begin, end] = offsets as [number, number];
    const expected = numel(shape as number[]) * DTYPE_BYTES[dtype as SafetensorsDtype];
    if (end - begin !== expected) {
      throw new SafetensorsError(
        path,
        `tensor '${name}': ${dtype} ${formatShape(shape as number[])} needs ${expected} bytes, data_offsets span ${end - begin}`,
      );
    }
    if (end > dataSize) {
      throw new SafetensorsError(
        path,
        `truncated: tensor '${name}' ends at data byte ${end}, but the file holds only ${dataSize} data bytes`,
      );
    }
    ranges.push([begin, end, name]);
    entries.set(name, {
      name,
      dtype: dtype as SafetensorsDtype,
      shape: shape as number[],
      offset: dataStart + begin,
      byteLength: end - begin,
    });
  }
  ranges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  for (let i = 1; i < ranges.length; i++) {
    const prev = ranges[i - 1]!;
    const cur = ranges[i]!;
    if (cur[0] < prev[1]) {
      throw new SafetensorsError(path, `corrupt header: tensors '${prev[2]}' and '${cur[2]}' overlap`);
    }
  }
  return { headerLength, entries, metadata };
}

function parseMetadata(path: string, value: unknown): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new SafetensorsError(path, 'corrupt header: __metadata__ must be an object of strings');
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string') throw new SafetensorsError(path, `__metadata__.${k} must be a string`);
    out[k] = v;
  }
  return out;
}

/** Reads every tensor (or the named ones) of a safetensors file: floats as float32, integers as int64. */
export async function readSafetensors(
  path: string,
  names?: readonly string[],
): Promise<Record<string, AnyTensor>> {
  const file = await SafetensorsFile.open(path);
  try {
    const out: Record<string, AnyTensor> = {};
    for (const name of names ?? file.names) out[name] = await file.read(name);
    return out;
  } finally {
    await file.close();
  }
}

export interface WriteSafetensorsOptions {
  /** Storage dtype for float tensors (default F32). */
  dtype?: 'F32' | 'F16' | 'BF16';
  metadata?: Record<string, string>;
}

/** Writes tensors to a safetensors file, atomically (a temporary file, then rename). */
export async function writeSafetensors(
  path: string,
  tensors: Readonly<Record<string, AnyTensor>>,
  options: WriteSafetensorsOptions = {},
): Promise<void> {
  const floatDtype = options.dtype ?? 'F32';
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (options.metadata) header.__metadata__ = options.metadata;
  let offset = 0;
  const blobs: Uint8Array[] = [];
  for (const name of names) {
    const t = tensors[name]!;
    const n = numel(t.shape);
    if (t.data.length !== n) {
      throw new Error(
        `writeSafetensors ${basename(path)}: tensor '${name}' has shape ${formatShape(t.shape)} (${n} values) but ${t.data.length} values`,
      );
    }
    let dtype: SafetensorsDtype;
    let bytes: Uint8Array;
    if (t.data instanceof BigInt64Array) {
      dtype = 'I64';
      bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    } else if (floatDtype === 'F32') {
      dtype = 'F32';
      bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    } else {
      dtype = floatDtype;
      const bits = floatDtype === 'F16' ? float32ToHalfArray(t.data) : float32ToBfloatArray(t.data);
      bytes = new Uint8Array(bits.buffer);
    }
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    offset += bytes.byteLength;
    blobs.push(bytes);
  }
  let json = JSON.stringify(header);
  // Pad the header with spaces so tensor data starts 8-byte aligned, as the reference writer does.
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(headerBytes.byteLength));
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  const handle = await open(tmp, 'w');
  try {
    await handle.write(len);
    await handle.write(headerBytes);
    for (const b of blobs) {
      for (let done = 0; done < b.byteLength; done += MAX_READ) {
        await handle.write(b.subarray(done, Math.min(b.byteLength, done + MAX_READ)));
      }
    }
    await handle.close();
    await rename(tmp, path);
  } catch (e) {
    await handle.close().catch(() => {});
    await rm(tmp, { force: true });
    throw e;
  }
}
