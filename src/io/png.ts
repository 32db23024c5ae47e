// PNG output for generated images: tensor → 8-bit RGB the way diffusers' numpy_to_pil does it, PNG encoding
// and decoding through fast-png, text metadata chunks (tEXt / iTXt, chosen like Pillow's add_text), and
// atomic file writes.
import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { inflateSync } from 'node:zlib';
import { convertIndexedToRgb, decode, encode } from 'fast-png';

export interface RgbImage {
  width: number;
  height: number;
  /** RGB, row-major, 3 bytes per pixel. */
  data: Uint8Array;
}

/** Round half to even, like numpy's round / rint. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * One image of an NCHW float tensor in [0, 1] (3 channels) as RGB bytes. Matches diffusers' numpy_to_pil,
 * `(images * 255).round().astype("uint8")` on float32: the product is rounded to float32 first, then
 * halves go to even (0.5 → 0, 1.5 → 2). Values are clamped to [0, 1] first; NaN becomes 0.
 */
export function imageFromTensor(t: { data: Float32Array; shape: number[] }, index = 0): RgbImage {
  if (t.shape.length !== 4 || t.shape[1] !== 3) {
    throw new Error(
      `imageFromTensor: expected an NCHW tensor with 3 channels, got shape [${t.shape.join(', ')}]`,
    );
  }
  const [n, , height, width] = t.shape as [number, number, number, number];
  if (!Number.isInteger(index) || index < 0 || index >= n) {
    throw new RangeError(`imageFromTensor: index ${index} out of range for a batch of ${n}`);
  }
  const plane = height * width;
  if (t.data.length !== n * 3 * plane) {
    throw new Error(
      `imageFromTensor: data has ${t.data.length} values, shape [${t.shape.join(', ')}] needs ${n * 3 * plane}`,
    );
  }
  const data = new Uint8Array(plane * 3);
  const base = index * 3 * plane;
  for (let c = 0; c < 3; c++) {
    const src = base + c * plane;
    for (let i = 0; i < plane; i++) {
      const v = t.data[src + i]!;
      const clamped = Number.isNaN(v) ? 0 : Math.min(1, Math.max(0, v));
      data[i * 3 + c] = roundHalfEven(Math.fround(clamped * 255));
    }
  }
  return { width, height, data };
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 of a chunk's type and data (node:zlib's crc32 is only in Node >= 20.15). */
function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

function latin1Bytes(s: string): Uint8Array {
  return Uint8Array.from(s, (ch) => ch.charCodeAt(0));
}

function isLatin1(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0xff) return false;
  return true;
}
// PNG keywords: 1-79 printable Latin-1 characters, no leading, trailing or doubled spaces.
const KEYWORD = /^(?! )(?!.* $)(?!.* {2})[\u0020-\u007e\u00a1-\u00ff]{1,79}$/u;

/** A tEXt chunk when the value is Latin-1 (as Pillow's add_text does), otherwise an uncompressed iTXt. */
function textChunk(keyword: string, value: string): Uint8Array {
  if (!KEYWORD.test(keyword)) {
    throw new Error(
      `encodePng: text keyword ${JSON.stringify(keyword)} is not a PNG keyword (1-79 printable Latin-1 characters)`,
    );
  }
  if (value.includes('\0'))
    throw new Error(`encodePng: text ${JSON.stringify(keyword)} contains a NUL character`);
  if (isLatin1(value)) return chunk('tEXt', latin1Bytes(`${keyword}\0${value}`));
  // keyword \0, compression flag 0, method 0, empty language tag \0, empty translated keyword \0, UTF-8 text
  const head = latin1Bytes(`${keyword}\0\0\0\0\0`);
  const body = new TextEncoder().encode(value);
  const data = new Uint8Array(head.length + body.length);
  data.set(head);
  data.set(body, head.length);
  return chunk('iTXt', data);
}

/** 8-bit RGB PNG; `text` entries go into tEXt / iTXt chunks placed right after IHDR. */
export function encodePng(img: RgbImage, text: Record<string, string> = {}): Uint8Array {
  const { width, height, data } = img;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new Error(`encodePng: width and height must be positive integers, got ${width}x${height}`);
  }
  if (data.length !== width * height * 3) {
    throw new Error(
      `encodePng: ${width}x${height} RGB needs ${width * height * 3} bytes, got ${data.length}`,
    );
  }
  const png = encode({ width, height, data, depth: 8, channels: 3 });
  const chunks = Object.entries(text).map(([k, v]) => textChunk(k, v));
  // The signature (8 bytes) and IHDR (12 + 13 bytes) always lead; metadata goes before the pixel data.
  const ihdrEnd = 8 + 12 + 13;
  const total = png.length + chunks.reduce((s, c) => s + c.length, 0);
  const out = new Uint8Array(total);
  out.set(png.subarray(0, ihdrEnd));
  let at = ihdrEnd;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  out.set(png.subarray(ihdrEnd), at);
  return out;
}

const latin1 = new TextDecoder('latin1');
const utf8 = new TextDecoder('utf-8');

/** tEXt, zTXt and iTXt chunks in file order (a later chunk with the same keyword wins). */
function readTextChunks(bytes: Uint8Array): Record<string, string> {
  const text: Record<string, string> = {};
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 8;
  while (at + 12 <= bytes.length) {
    const length = view.getUint32(at);
    const type = latin1.decode(bytes.subarray(at + 4, at + 8));
    const data = bytes.subarray(at + 8, at + 8 + length);
    at += 12 + length;
    if (type === 'IEND') break;
    if (type !== 'tEXt' && type !== 'zTXt' && type !== 'iTXt') continue;
    const nul = data.indexOf(0);
    if (nul < 1) throw new Error(`decodePng: ${type} chunk without a keyword`);
    const keyword = latin1.decode(data.subarray(0, nul));
    if (type === 'tEXt') text[keyword] = latin1.decode(data.subarray(nul + 1));
    else if (type === 'zTXt') text[keyword] = latin1.decode(inflateSync(data.subarray(nul + 2)));
    else {
      const compressed = data[nul + 1] === 1;
      const langEnd = data.indexOf(0, nul + 3);
      const translatedEnd = langEnd < 0 ? -1 : data.indexOf(0, langEnd + 1);
      if (translatedEnd < 0) throw new Error(`decodePng: malformed iTXt chunk ${JSON.stringify(keyword)}`);
      const body = data.subarray(translatedEnd + 1);
      text[keyword] = utf8.decode(compressed ? inflateSync(body) : body);
    }
  }
  return text;
}

/** Any PNG fast-png reads, as 8-bit RGB (alpha is dropped, 16-bit samples rounded to 8 bits), plus its text. */
export function decodePng(bytes: Uint8Array): RgbImage & { text: Record<string, string> } {
  const png = decode(bytes, { checkCrc: true });
  const { width, height } = png;
  const pixels = width * height;
  const data = new Uint8Array(pixels * 3);
  let samples: ArrayLike<number> = png.data;
  let channels = png.channels;
  let depth: number = png.depth;
  if (png.palette) {
    samples = convertIndexedToRgb(png);
    channels = png.palette[0]?.length ?? 3;
    depth = 8;
  } else if (depth < 8) {
    samples = unpackGrey(png.data, width, height, depth);
    depth = 8;
  }
  const max = depth === 16 ? 65535 : 255;
  const to8 = (v: number) => (max === 255 ? v : Math.round((v * 255) / max));
  const grey = channels < 3;
  for (let i = 0; i < pixels; i++) {
    for (let c = 0; c < 3; c++) data[i * 3 + c] = to8(samples[i * channels + (grey ? 0 : c)]!);
  }
  return { width, height, data, text: readTextChunks(bytes) };
}

/** Greyscale at 1, 2 or 4 bits: rows are packed and byte-aligned; scale each sample to 0..255. */
function unpackGrey(packed: ArrayLike<number>, width: number, height: number, depth: number): Uint8Array {
  const out = new Uint8Array(width * height);
  const rowBytes = Math.ceil((width * depth) / 8);
  const mask = (1 << depth) - 1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const bit = x * depth;
      const byte = packed[y * rowBytes + (bit >> 3)]!;
      const v = (byte >> (8 - depth - (bit & 7))) & mask;
      out[y * width + x] = Math.round((v * 255) / mask);
    }
  }
  return out;
}

/**
 * Writes `data` to `path` so that readers see the old file or the complete new one, never a partial one:
 * a temporary file in the same folder, fsync, rename over the target. On failure the temporary file is
 * removed and the error (naming `path`) is rethrown.
 */
export async function writeFileAtomic(path: string, data: Uint8Array): Promise<void> {
  const dir = dirname(path);
  const temp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let created = false;
  try {
    const handle = await open(temp, 'wx');
    created = true;
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
    created = false;
  } catch (e) {
    if (created) await unlink(temp).catch(() => undefined);
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(`${path}: cannot write (${code ?? (e as Error).message})`, { cause: e });
  }
  await syncDir(dir);
}

/** Makes the rename itself durable. Not possible on Windows (folders cannot be opened), hence best effort. */
async function syncDir(dir: string): Promise<void> {
  try {
    const handle = await open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // best effort: the file itself is complete and in place
  }
}
