// A minimal protobuf wire-format writer: enough to serialise ONNX ModelProto messages.
// ONNX graphs are small once weights live outside them, so simplicity beats speed here.

export class ProtoWriter {
  private chunks: Uint8Array[] = [];
  private cur = new Uint8Array(256);
  private pos = 0;
  private total = 0;

  private ensure(n: number): void {
    if (this.pos + n <= this.cur.length) return;
    this.flushCur();
    this.cur = new Uint8Array(Math.max(256, n));
  }

  private flushCur(): void {
    if (this.pos > 0) {
      this.chunks.push(this.cur.subarray(0, this.pos));
      this.total += this.pos;
    }
    this.cur = new Uint8Array(256);
    this.pos = 0;
  }

  private varint(value: number | bigint): void {
    let v = BigInt.asUintN(64, BigInt(value));
    this.ensure(10);
    while (v >= 0x80n) {
      this.cur[this.pos++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.cur[this.pos++] = Number(v);
  }

  private smallVarint(value: number): void {
    if (value < 0 || value > 0x7fffffff) {
      this.varint(value);
      return;
    }
    this.ensure(5);
    while (value >= 0x80) {
      this.cur[this.pos++] = (value & 0x7f) | 0x80;
      value >>>= 7;
    }
    this.cur[this.pos++] = value;
  }

  private tag(field: number, wire: number): void {
    this.smallVarint((field << 3) | wire);
  }

  int(field: number, value: number | bigint): this {
    this.tag(field, 0);
    if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 0x7fffffff) {
      this.smallVarint(value);
    } else {
      this.varint(value);
    }
    return this;
  }

  float(field: number, value: number): this {
    this.tag(field, 5);
    this.ensure(4);
    new DataView(this.cur.buffer, this.cur.byteOffset).setFloat32(this.pos, value, true);
    this.pos += 4;
    return this;
  }

  bytes(field: number, data: Uint8Array): this {
    this.tag(field, 2);
    this.smallVarint(data.byteLength);
    if (data.byteLength > 4096) {
      this.flushCur();
      this.chunks.push(data);
      this.total += data.byteLength;
    } else {
      this.ensure(data.byteLength);
      this.cur.set(data, this.pos);
      this.pos += data.byteLength;
    }
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, new TextEncoder().encode(value));
  }

  message(field: number, build: (w: ProtoWriter) => void): this {
    const sub = new ProtoWriter();
    build(sub);
    return this.bytes(field, sub.finish());
  }

  finish(): Uint8Array {
    this.flushCur();
    if (this.chunks.length === 1) return this.chunks[0]!;
    const out = new Uint8Array(this.total);
    let off = 0;
    for (const c of this.chunks) {
      out.set(c, off);
      off += c.byteLength;
    }
    return out;
  }
}
