import assert from 'node:assert/strict';
import { mkdtemp, open, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { halfBitsToFloat } from './half.js';
import { readSafetensors, SafetensorsFile, writeSafetensors } from './safetensors.js';

const dir = await mkdtemp(join(tmpdir(), 'st-test-'));
after(() => rm(dir, { recursive: true, force: true }));

/** A raw safetensors file from a header object and data bytes (to build broken files). */
async function rawFile(
  name: string,
  header: unknown,
  data: Uint8Array,
  lengthOverride?: bigint,
): Promise<string> {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  const p = join(dir, name);
  await writeFile(p, Buffer.concat([len, json, data]));
  return p;
}

test('round trip: F32, F16, BF16 and I64, with metadata; the header is 8-byte aligned', async () => {
  const values = Float32Array.from([0, 1, -2.5, 3.25, 65504, 1e-5, -0.1, 1 / 3]);
  const p = join(dir, 'rt.safetensors');
  for (const dtype of ['F32', 'F16', 'BF16'] as const) {
    await writeSafetensors(
      p,
      {
        'a.weight': { data: values, shape: [2, 4] },
        ids: { data: BigInt64Array.from([1n, -7n, 49407n]), shape: [3] },
      },
      { dtype, metadata: { format: 'pt' } },
    );
    const f = await SafetensorsFile.open(p);
    assert.equal((f.headerLength + 8) % 8, 0);
    assert.deepEqual(f.metadata, { format: 'pt' });
    assert.equal(f.entry('a.weight').dtype, dtype);
    await f.close();
    const t = await readSafetensors(p);
    assert.deepEqual(t.ids!.data, BigInt64Array.from([1n, -7n, 49407n]));
    const got = t['a.weight']!.data as Float32Array;
    assert.deepEqual(t['a.weight']!.shape, [2, 4]);
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      // Each storage dtype keeps its own precision: exact for F32, ~2^-11 for F16, ~2^-8 for BF16.
      const tol = dtype === 'F32' ? 0 : Math.abs(v) * (dtype === 'F16' ? 2 ** -11 : 2 ** -8) + 1e-7;
      assert.ok(Math.abs(got[i]! - v) <= tol, `${dtype} [${i}]: ${got[i]} vs ${v}`);
    }
  }
});

test('F16 widening covers subnormals, infinities and signed zero', async () => {
  assert.equal(halfBitsToFloat(0x0001), 2 ** -24);
  assert.equal(halfBitsToFloat(0x7c00), Number.POSITIVE_INFINITY);
  assert.equal(halfBitsToFloat(0xfc00), Number.NEGATIVE_INFINITY);
  assert.ok(Number.isNaN(halfBitsToFloat(0x7e00)));
  assert.ok(Object.is(halfBitsToFloat(0x8000), -0));
  assert.equal(halfBitsToFloat(0x3c00), 1);
});

test('corrupt and truncated files fail with the file named and what was expected', async () => {
  const ok = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };
  const tiny = join(dir, 'tiny.safetensors');
  await writeFile(tiny, Buffer.from([1, 2, 3]));
  await assert.rejects(
    SafetensorsFile.open(tiny),
    /tiny\.safetensors: truncated: .*at least 8 bytes, found 3/,
  );
  const huge = await rawFile('huge.safetensors', { a: ok }, new Uint8Array(8), 1n << 40n);
  await assert.rejects(SafetensorsFile.open(huge), /huge\.safetensors: corrupt or truncated: header length/);
  const badJson = join(dir, 'badjson.safetensors');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(5n);
  await writeFile(badJson, Buffer.concat([len, Buffer.from('{"a":')]));
  await assert.rejects(SafetensorsFile.open(badJson), /badjson\.safetensors: corrupt header: not valid JSON/);
  const short = await rawFile('short.safetensors', { a: ok }, new Uint8Array(4));
  await assert.rejects(
    SafetensorsFile.open(short),
    /short\.safetensors: truncated: tensor 'a' ends at data byte 8, but the file holds only 4/,
  );
  const span = await rawFile('span.safetensors', { a: { ...ok, shape: [3] } }, new Uint8Array(8));
  await assert.rejects(
    SafetensorsFile.open(span),
    /tensor 'a': F32 \[3\] needs 12 bytes, data_offsets span 8/,
  );
  const overlap = await rawFile(
    'overlap.safetensors',
    { a: ok, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } },
    new Uint8Array(12),
  );
  await assert.rejects(
    SafetensorsFile.open(overlap),
    /overlap\.safetensors: corrupt header: tensors 'a' and 'b' overlap/,
  );
  const dtype = await rawFile('dtype.safetensors', { a: { ...ok, dtype: 'C64' } }, new Uint8Array(8));
  await assert.rejects(
    SafetensorsFile.open(dtype),
    /dtype\.safetensors: tensor 'a': unsupported dtype "C64"/,
  );
  const f = await SafetensorsFile.open(await rawFile('good.safetensors', { a: ok }, new Uint8Array(8)));
  await assert.rejects(f.readFloat32('missing'), /good\.safetensors: no tensor named 'missing'/);
  await f.close();
  const ints = await SafetensorsFile.open(
    await rawFile('int.safetensors', { a: { ...ok, dtype: 'I32' } }, new Uint8Array(8)),
  );
  await assert.rejects(
    ints.readFloat32('a'),
    /tensor 'a': expected a float dtype \(F32, F16, BF16, F64\), found I32/,
  );
  await ints.close();
});

test('reads a tensor stored beyond 4 GiB by offset (sparse file)', async () => {
  const gap = 2 ** 32 + 4096;
  const header = {
    first: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
    far: { dtype: 'F32', shape: [2], data_offsets: [gap, gap + 8] },
  };
  const p = await rawFile('far.safetensors', header, new Uint8Array(4));
  const f0 = await SafetensorsFile.open(p).catch((e: Error) => e);
  assert.ok(f0 instanceof Error, 'a truncated far tensor must be rejected');
  const json = Buffer.byteLength(JSON.stringify(header));
  const dataStart = 8 + json;
  await truncate(p, dataStart + gap);
  const h = await open(p, 'r+');
  await h.write(Buffer.from(new Float32Array([1.5, -2]).buffer), 0, 8, dataStart + gap);
  await h.close();
  const f = await SafetensorsFile.open(p);
  assert.equal(f.entry('far').offset, dataStart + gap);
  assert.deepEqual([...(await f.readFloat32('far')).data], [1.5, -2]);
  await f.close();
});
