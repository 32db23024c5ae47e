// A minimal protobuf wire-format reader: enough to walk the ONNX models ORT saves (to find where it wrote
// each weight and its pre-packed copies). Only varint and length-delimited fields carry what we read.

export type ProtoField =
  | { field: number; wire: 0; value: bigint }
  | { field: number; wire: 2; value: Uint8Array }
  | { field: number; wire: 1 | 5; value: null };

/** The fields of one message, in order. Throws on truncated or malformed input, naming `what`. */
export function* protoFields(buf: Uint8Array, what: string): Generator<ProtoField> {
  let pos = 0;
  const varint = (): bigint => {
    let v = 0n;
    for (let shift = 0n; ; shift += 7n) {
      if (pos >= buf.length || shift > 63n)
        throw new Error(`${what}: truncated or overlong varint at byte ${pos}`);
      const b = buf[pos++]!;
      v |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return v;
    }
  };
  while (pos < buf.length) {
    const tag = varint();
    const field = Number(tag >> 3n);
    const wire = Number(tag & 7n);
    if (wire === 0) yield { field, wire, value: varint() };
    else if (wire === 2) {
      const len = Number(varint());
      if (pos + len > buf.length)
        throw new Error(`${what}: field ${field} runs past the end (${len} bytes at ${pos})`);
      yield { field, wire, value: buf.subarray(pos, pos + len) };
      pos += len;
    } else if (wire === 1 || wire === 5) {
      pos += wire === 1 ? 8 : 4;
      if (pos > buf.length) throw new Error(`${what}: fixed-width field ${field} runs past the end`);
      yield { field, wire, value: null };
    } else throw new Error(`${what}: unsupported wire type ${wire} for field ${field}`);
  }
}

/** The length-delimited fields numbered `field` of a message. */
export function protoMessages(buf: Uint8Array, field: number, what: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const f of protoFields(buf, what)) if (f.field === field && f.wire === 2) out.push(f.value);
  return out;
}

const utf8 = new TextDecoder();

export function protoString(bytes: Uint8Array): string {
  return utf8.decode(bytes);
}
