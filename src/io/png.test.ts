import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { deflateSync } from 'node:zlib';
import { decode, encode } from 'fast-png';
import { decodePng, encodePng, imageFromTensor, type RgbImage, writeFileAtomic } from './png.js';

function testImage(width: number, height: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37 + (i >> 5)) & 0xff;
  return { width, height, data };
}

/** Chunk types of a PNG in file order. */
function chunkTypes(png: Uint8Array): string[] {
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const types: string[] = [];
  for (let at = 8; at < png.length; at += 12 + view.getUint32(at)) {
    types.push(String.fromCharCode(...png.subarray(at + 4, at + 8)));
  }
  return types;
}

describe('imageFromTensor', () => {
  test('picks the batch entry and interleaves NCHW into RGB', () => {
    // [2, 3, 2, 3]: value k/255 (float32) at a known spot must give byte k.
    const [n, h, w] = [2, 2, 3];
    const data = new Float32Array(n * 3 * h * w);
    const expected = new Uint8Array(h * w * 3);
    for (let b = 0; b < n; b++) {
      for (let c = 0; c < 3; c++) {
        for (let y = 0; y < h; y++) {
          for (let x = 0; x < w; x++) {
            const k = (b * 97 + c * 41 + y * 13 + x * 7) % 256;
            data[((b * 3 + c) * h + y) * w + x] = k / 255;
            if (b === 1) expected[(y * w + x) * 3 + c] = k;
          }
        }
      }
    }
    const img = imageFromTensor({ data, shape: [n, 3, h, w] }, 1);
    assert.deepEqual([img.width, img.height], [w, h]);
    assert.deepEqual(img.data, expected);
  });

  test('clamps to [0, 1]', () => {
    const values = [
      -1,
      -0,
      0,
      1,
      1.0000001,
      2,
      Number.POSITIVE_INFINITY,
      Number.NEGATIVE_INFINITY,
      Number.NaN,
      -1e-9,
    ];
    const expected = [0, 0, 0, 255, 255, 255, 255, 0, 0, 0];
    const img = imageFromTensor({
      data: Float32Array.from([...values, ...values, ...values]),
      shape: [1, 3, 1, 10],
    });
    for (let i = 0; i < values.length; i++) {
      assert.deepEqual(
        [...img.data.subarray(i * 3, i * 3 + 3)],
        [expected[i], expected[i], expected[i]],
        `value ${values[i]}`,
      );
    }
  });

  test('rounds like numpy float32 (x * 255).round(): ties to even, product rounded to float32', () => {
    // Inputs are float32 values; expected bytes from numpy 2.4 on a float32 array, as diffusers' numpy_to_pil
    // computes them. fround((2m+1)/510) * 255 lands exactly on m + 0.5 in float32; the neighbours are
    // one float32 ulp below / above. A float64 product would give 1, 3, 253 and 255 at the marked spots.
    const cases: [number, number][] = [
      [0.0019607841968536377, 0],
      [0.0019607844296842813, 0], // 0.5 → 0 (float64: 1)
      [0.001960784662514925, 1],
      [0.005882352590560913, 1],
      [0.0058823530562222, 2], // 1.5 → 2
      [0.005882353521883488, 2],
      [0.009803920984268188, 2],
      [0.009803921915590763, 2], // 2.5 → 2 (float64: 3)
      [0.009803922846913338, 3],
      [0.4999999701976776, 127],
      [0.5, 128], // 127.5 → 128
      [0.5039215683937073, 128], // 128.5 → 128
      [0.503921627998352, 129],
      [0.9941176176071167, 254], // float32 product 253.5 → 254 (float64: 253.49999… → 253)
      [0.998039186000824, 254], // 254.5 → 254
      [0.9980392456054688, 254], // float32 product is still 254.5 (float64: 255)
    ];
    const data = new Float32Array(cases.length * 3);
    cases.forEach(([v], i) => {
      data[i] = v;
      data[cases.length + i] = v;
      data[2 * cases.length + i] = v;
    });
    const img = imageFromTensor({ data, shape: [1, 3, 1, cases.length] });
    cases.forEach(([v, byte], i) => {
      assert.equal(Math.fround(v), v, 'test input must be a float32 value');
      assert.equal(img.data[i * 3], byte, `x = ${v}`);
    });
  });

  test('away from ties it equals a float64 round(x * 255) for every byte value', () => {
    const data = new Float32Array(3 * 256 * 3);
    const expected: number[] = [];
    for (let k = 0; k < 256; k++) {
      for (const [j, offset] of [-0.3, 0, 0.3].entries()) {
        const x = Math.min(1, Math.max(0, (k + offset) / 255));
        data[k * 3 + j] = x;
        expected.push(Math.round(Math.fround(x) * 255));
      }
    }
    // the same 768 values in all three channels, one pixel each
    data.copyWithin(768, 0, 768);
    data.copyWithin(1536, 0, 768);
    const img = imageFromTensor({ data, shape: [1, 3, 1, 768] });
    for (let i = 0; i < 768; i++) assert.equal(img.data[i * 3 + 1], expected[i], `value ${data[i]}`);
  });

  test('rejects bad shapes and indices', () => {
    assert.throws(() => imageFromTensor({ data: new Float32Array(12), shape: [1, 4, 1, 3] }), /3 channels/);
    assert.throws(
      () => imageFromTensor({ data: new Float32Array(9), shape: [1, 3, 1, 3] }, 1),
      /index 1 out of range/,
    );
    assert.throws(() => imageFromTensor({ data: new Float32Array(8), shape: [1, 3, 1, 3] }), /needs 9/);
  });
});

describe('encodePng / decodePng', () => {
  test('round-trips pixels and Latin-1 text as tEXt, other text as iTXt, before IDAT', () => {
    const img = testImage(33, 17);
    const text = {
      parameters: 'a red fox\nSteps: 20, Sampler: Euler, CFG scale: 5, Seed: 1, Size: 1024x1024',
      latin1: 'café ×½',
      unicode: '東京タワーの夜景, 一只猫 🦊 — “quotes”',
      empty: '',
    };
    const png = encodePng(img, text);
    assert.deepEqual(chunkTypes(png), ['IHDR', 'tEXt', 'tEXt', 'iTXt', 'tEXt', 'IDAT', 'IEND']);
    const back = decodePng(png);
    assert.deepEqual([back.width, back.height], [33, 17]);
    assert.deepEqual(back.data, img.data);
    assert.deepEqual(back.text, text);
  });

  test('fast-png itself reads our tEXt chunks and pixels', () => {
    const img = testImage(4, 3);
    const png = decode(encodePng(img, { parameters: 'x, Seed: 1' }), { checkCrc: true });
    assert.deepEqual(png.text, { parameters: 'x, Seed: 1' });
    assert.deepEqual([png.channels, png.depth], [3, 8]);
    assert.deepEqual(new Uint8Array(png.data), img.data);
  });

  test('reads compressed iTXt and zTXt written elsewhere, and converts other pixel formats', () => {
    // RGBA 16-bit with hand-made chunks spliced after IHDR
    const rgba16 = new Uint16Array([0, 257, 65535, 1234, 65535, 32896, 128, 0]);
    const base = encode({ width: 2, height: 1, data: rgba16, depth: 16, channels: 4 });
    // An independent chunk writer (length, type, data, CRC-32) for chunks encodePng never writes.
    const crcChunk = (type: string, body: Uint8Array) => {
      const table = new Uint32Array(256).map((_, n) => {
        let c = n;
        for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
        return c >>> 0;
      });
      const out = new Uint8Array(12 + body.length);
      const view = new DataView(out.buffer);
      view.setUint32(0, body.length);
      out.set(Buffer.from(type, 'latin1'), 4);
      out.set(body, 8);
      let c = 0xffffffff;
      for (const b of out.subarray(4, 8 + body.length)) c = table[(c ^ b) & 0xff]! ^ (c >>> 8);
      view.setUint32(8 + body.length, (c ^ 0xffffffff) >>> 0);
      return out;
    };
    const itxt = crcChunk(
      'iTXt',
      Buffer.concat([
        Buffer.from('Comment\0\x01\x00de\0Kommentar\0', 'latin1'),
        deflateSync(Buffer.from('grüße 🦊', 'utf8')),
      ]),
    );
    const ztxt = crcChunk(
      'zTXt',
      Buffer.concat([Buffer.from('Author\0\0', 'latin1'), deflateSync(Buffer.from('Zoë', 'latin1'))]),
    );
    const png = Buffer.concat([base.subarray(0, 33), itxt, ztxt, base.subarray(33)]);
    const back = decodePng(png);
    assert.deepEqual(back.text, { Comment: 'grüße 🦊', Author: 'Zoë' });
    assert.deepEqual([...back.data], [0, 1, 255, 255, 128, 0]);

    const grey4 = encode({
      width: 3,
      height: 2,
      data: new Uint8Array([0x0f, 0x80, 0xf0, 0x10]),
      depth: 4,
      channels: 1,
    });
    assert.deepEqual(
      [...decodePng(grey4).data],
      [0, 0, 0, 255, 255, 255, 136, 136, 136, 255, 255, 255, 0, 0, 0, 17, 17, 17],
    );
  });

  test('rejects bad keywords, NUL in text and wrong data sizes', () => {
    const img = testImage(2, 2);
    assert.throws(() => encodePng(img, { '': 'x' }), /not a PNG keyword/);
    assert.throws(() => encodePng(img, { ' lead': 'x' }), /not a PNG keyword/);
    assert.throws(() => encodePng(img, { ключ: 'x' }), /not a PNG keyword/);
    assert.throws(() => encodePng(img, { k: 'a\0b' }), /NUL/);
    assert.throws(
      () => encodePng({ width: 2, height: 2, data: new Uint8Array(11) }),
      /needs 12 bytes, got 11/,
    );
  });

  test('detects a corrupted file', () => {
    const png = encodePng(testImage(8, 8), { parameters: 'p' });
    const bad = png.slice();
    bad[40] = bad[40]! ^ 0xff; // inside the tEXt chunk, so its CRC no longer matches
    assert.throws(() => decodePng(bad));
  });
});

describe('writeFileAtomic', () => {
  test('writes, replaces, and leaves no temporary file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'png-atomic-'));
    try {
      const path = join(dir, 'out.png');
      await writeFileAtomic(path, new Uint8Array([1, 2, 3]));
      assert.deepEqual(new Uint8Array(await readFile(path)), new Uint8Array([1, 2, 3]));
      await writeFileAtomic(path, new Uint8Array([4, 5]));
      assert.deepEqual(new Uint8Array(await readFile(path)), new Uint8Array([4, 5]));
      assert.deepEqual(await readdir(dir), ['out.png']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('into a missing folder: throws naming the path and creates nothing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'png-atomic-'));
    try {
      const path = join(dir, 'missing', 'out.png');
      await assert.rejects(writeFileAtomic(path, new Uint8Array([1])), (e: Error) => {
        assert.ok(e.message.startsWith(`${path}: cannot write`), e.message);
        return true;
      });
      assert.deepEqual(await readdir(dir), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a failed rename keeps the old file whole and removes the temporary file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'png-atomic-'));
    try {
      // the target is a non-empty folder: the temp file is written, then rename fails
      const target = join(dir, 'taken');
      await writeFileAtomic(join(dir, 'keep.png'), new Uint8Array([9, 9]));
      await mkdir(target);
      await writeFile(join(target, 'x'), 'x');
      await assert.rejects(writeFileAtomic(target, new Uint8Array(1 << 20)), /taken: cannot write/);
      assert.deepEqual((await readdir(dir)).sort(), ['keep.png', 'taken']);
      assert.deepEqual(await readdir(target), ['x']);
      assert.deepEqual(new Uint8Array(await readFile(join(dir, 'keep.png'))), new Uint8Array([9, 9]));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
