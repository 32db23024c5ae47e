// ONNX ModelProto serialisation for the subset our graphs use (field numbers from onnx.proto).
import { type DType, onnxTypeCode } from './dtype.js';
import { protoFields, protoMessages, protoString } from './protobuf-reader.js';
import { ProtoWriter } from './protobuf-writer.js';

export type Attr =
  | { type: 'int'; value: number }
  | { type: 'float'; value: number }
  | { type: 'ints'; value: readonly number[] }
  | { type: 'floats'; value: readonly number[] }
  | { type: 'string'; value: string };

export const attr = {
  int: (value: number): Attr => ({ type: 'int', value }),
  float: (value: number): Attr => ({ type: 'float', value }),
  ints: (value: readonly number[]): Attr => ({ type: 'ints', value }),
  floats: (value: readonly number[]): Attr => ({ type: 'floats', value }),
  string: (value: string): Attr => ({ type: 'string', value }),
};

export interface OnnxNode {
  opType: string;
  domain: string;
  inputs: readonly string[];
  outputs: readonly string[];
  attrs: Readonly<Record<string, Attr>>;
  name: string;
}

export interface OnnxValueInfo {
  name: string;
  dtype: DType;
  shape: readonly number[];
}

export interface ExternalLocation {
  location: string;
  offset: number;
  length: number;
  /**
   * ORT's pre-packed copies of this weight in the same file, as ORT writes them when it saves a model with
   * `session.save_external_prepacked_constant_initializers`: `<op>+<hash>|<offset>;<length>;<checksum>`.
   */
  prepacked?: readonly string[];
}

export interface OnnxInitializer {
  name: string;
  dtype: DType;
  shape: readonly number[];
  raw?: Uint8Array;
  external?: ExternalLocation;
}

export interface OnnxGraph {
  name: string;
  nodes: readonly OnnxNode[];
  inputs: readonly OnnxValueInfo[];
  outputs: readonly OnnxValueInfo[];
  initializers: readonly OnnxInitializer[];
}

export const OPSETS: ReadonlyArray<{ domain: string; version: number }> = [
  { domain: '', version: 17 },
  { domain: 'com.microsoft', version: 1 },
];

// Imported only by graphs that use it: builds whose CPU has no NCHWc kernel do not register the domain.
export const NCHWC_DOMAIN = 'com.microsoft.nchwc';
const NCHWC_OPSET = { domain: NCHWC_DOMAIN, version: 1 };

const IR_VERSION = 8;

const ATTR_TYPE = { float: 1, int: 2, string: 3, floats: 6, ints: 7 } as const;

function writeAttr(w: ProtoWriter, name: string, a: Attr): void {
  w.string(1, name);
  switch (a.type) {
    case 'float':
      w.float(2, a.value);
      break;
    case 'int':
      w.int(3, a.value);
      break;
    case 'string':
      w.string(4, a.value);
      break;
    case 'floats':
      for (const v of a.value) w.float(7, v);
      break;
    case 'ints':
      for (const v of a.value) w.int(8, v);
      break;
  }
  w.int(20, ATTR_TYPE[a.type]);
}

function writeValueInfo(w: ProtoWriter, v: OnnxValueInfo): void {
  w.string(1, v.name);
  w.message(2, (t) =>
    t.message(1, (tt) => {
      tt.int(1, onnxTypeCode(v.dtype));
      tt.message(2, (s) => {
        for (const d of v.shape) s.message(1, (dim) => dim.int(1, d));
      });
    }),
  );
}

function writeInitializer(w: ProtoWriter, t: OnnxInitializer): void {
  for (const d of t.shape) w.int(1, d);
  w.int(2, onnxTypeCode(t.dtype));
  w.string(8, t.name);
  if (t.external) {
    const ext = t.external;
    const entries: Array<[string, string]> = [
      ['location', ext.location],
      ['offset', String(ext.offset)],
      ['length', String(ext.length)],
      ...(ext.prepacked ?? []).map((v, i): [string, string] => [`prepacked_${i}`, v]),
    ];
    for (const [k, v] of entries) w.message(13, (e) => e.string(1, k).string(2, v));
    w.int(14, 1);
  } else {
    w.bytes(9, t.raw ?? new Uint8Array(0));
  }
}

export function serializeModel(graph: OnnxGraph): Uint8Array {
  const w = new ProtoWriter();
  w.int(1, IR_VERSION);
  w.string(2, 'distrifusion');
  const opsets = graph.nodes.some((n) => n.domain === NCHWC_OPSET.domain) ? [...OPSETS, NCHWC_OPSET] : OPSETS;
  for (const o of opsets) w.message(8, (m) => m.string(1, o.domain).int(2, o.version));
  w.message(7, (g) => {
    for (const n of graph.nodes) {
      g.message(1, (nw) => {
        for (const i of n.inputs) nw.string(1, i);
        for (const o of n.outputs) nw.string(2, o);
        nw.string(3, n.name);
        nw.string(4, n.opType);
        for (const [k, a] of Object.entries(n.attrs)) nw.message(5, (aw) => writeAttr(aw, k, a));
        if (n.domain) nw.string(7, n.domain);
      });
    }
    g.string(2, graph.name);
    for (const t of graph.initializers) g.message(5, (tw) => writeInitializer(tw, t));
    for (const v of graph.inputs) g.message(11, (vw) => writeValueInfo(vw, v));
    for (const v of graph.outputs) g.message(12, (vw) => writeValueInfo(vw, v));
  });
  return w.finish();
}

/** The external-data entries (location, offset, length, prepacked_N...) of each initializer of a saved model. */
export function readExternalInitializers(
  model: Uint8Array,
  what: string,
): Array<{ name: string; external: Map<string, string> }> {
  const out: Array<{ name: string; external: Map<string, string> }> = [];
  for (const graph of protoMessages(model, 7, what)) {
    for (const tensor of protoMessages(graph, 5, what)) {
      let name = '';
      const external = new Map<string, string>();
      for (const f of protoFields(tensor, what)) {
        if (f.wire !== 2) continue;
        if (f.field === 8) name = protoString(f.value);
        else if (f.field === 13) {
          let key = '';
          let value = '';
          for (const e of protoFields(f.value, what)) {
            if (e.wire === 2 && e.field === 1) key = protoString(e.value);
            else if (e.wire === 2 && e.field === 2) value = protoString(e.value);
          }
          external.set(key, value);
        }
      }
      out.push({ name, external });
    }
  }
  return out;
}
