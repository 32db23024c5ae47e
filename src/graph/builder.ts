import type { WeightEntry, WeightStore } from '../io/weights.js';
import { DTYPE_SIZE, type DType } from './dtype.js';
import type { ExchangeHooks } from './hooks.js';
import type { Attr, OnnxInitializer, OnnxValueInfo } from './onnx-model.js';

/** A symbolic tensor: a name in a graph under construction, with a static dtype and shape. */
export class SymTensor {
  constructor(
    readonly graph: GraphBuilder,
    readonly name: string,
    readonly dtype: DType,
    readonly shape: readonly number[],
  ) {}

  get rank(): number {
    return this.shape.length;
  }

  dim(i: number): number {
    const d = this.shape[i < 0 ? this.shape.length + i : i];
    if (d === undefined)
      throw new Error(`tensor ${this.name}: no axis ${i} in shape [${this.shape.join(', ')}]`);
    return d;
  }
}

/** A node as recorded by the builder; exchange and split markers are pseudo-nodes that cut segments. */
export interface BuiltNode {
  opType: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  outputInfo: Array<{ dtype: DType; shape: readonly number[] }>;
  attrs: Record<string, Attr>;
  name: string;
  /** Module path the node was emitted under (for errors and segment names). */
  path: string;
  /** Depends only on weights and constants: may be re-emitted in every segment that needs it. */
  constant: boolean;
  /** The Identity output() adds to name a graph output: the segment planner may fold it into its source. */
  outputCopy?: true;
}

export interface ExchangeMarker {
  kind: string;
  path: string;
  local: string[];
  assembled: OnnxValueInfo[];
  /** Free-form data the exchange implementation needs (band geometry, mode). */
  meta: Readonly<Record<string, unknown>>;
}

export type MarkerNode = { marker: 'exchange'; exchange: ExchangeMarker } | { marker: 'split'; path: string };

export type GraphItem = BuiltNode | MarkerNode;

export function isMarker(item: GraphItem): item is MarkerNode {
  return 'marker' in item;
}

/** A weight used by a graph: an external initializer pointing into a safetensors byte range. */
export interface WeightUse {
  /** Initializer name in the graph (the checkpoint key). */
  name: string;
  entry: WeightEntry;
  dtype: DType;
}

export class ShapeError extends Error {
  constructor(op: string, path: string, message: string) {
    super(`${op} at '${path || '<root>'}': ${message}`);
    this.name = 'ShapeError';
  }
}

export interface GraphBuilderOptions {
  weights?: WeightStore;
  hooks?: ExchangeHooks;
}

const SAFETENSORS_TO_DTYPE: Record<string, DType> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/**
 * Emits an ONNX graph from model code. The module path (scope) names tensors and finds weights by their
 * checkpoint keys; ops check shapes as they are emitted. Exchange markers cut the graph into segments.
 */
export class GraphBuilder {
  readonly items: GraphItem[] = [];
  readonly inputs: OnnxValueInfo[] = [];
  readonly outputs: OnnxValueInfo[] = [];
  readonly constants: OnnxInitializer[] = [];
  readonly weights = new Map<string, WeightUse>();
  readonly invariantInputs = new Set<string>();
  readonly hooks: ExchangeHooks;
  private readonly weightTensors = new Map<string, SymTensor>();
  private readonly store: WeightStore | undefined;
  private readonly scopeStack: string[] = [];
  private readonly constantNames = new Set<string>();
  private readonly inputNames = new Set<string>();
  private counter = 0;

  constructor(
    readonly name: string,
    options: GraphBuilderOptions = {},
  ) {
    this.store = options.weights;
    this.hooks = options.hooks ?? {};
  }

  /** The current module path, e.g. `down_blocks.1.attentions.0`: also the weight key prefix. */
  get path(): string {
    return this.scopeStack.join('.');
  }

  scope<T>(name: string | number, fn: () => T): T {
    this.scopeStack.push(String(name));
    try {
      return fn();
    } finally {
      this.scopeStack.pop();
    }
  }

  /** Runs fn with the module path replaced (for emitting a sibling module's graph). */
  atPath<T>(path: string, fn: () => T): T {
    const saved = this.scopeStack.splice(0, this.scopeStack.length);
    if (path) this.scopeStack.push(path);
    try {
      return fn();
    } finally {
      this.scopeStack.splice(0, this.scopeStack.length, ...saved);
    }
  }

  private freshName(base: string): string {
    this.counter += 1;
    const p = this.path;
    return `${p ? `${p}/` : ''}${base}_${this.counter}`;
  }

  /**
   * A graph input. `invariant` inputs usually keep their value from one run to the next (the text
   * conditioning of a denoising loop): what depends only on them and on weights runs once, in a prologue
   * segment whose results are reused while those inputs are unchanged.
   */
  input(
    name: string,
    dtype: DType,
    shape: readonly number[],
    options: { invariant?: boolean } = {},
  ): SymTensor {
    if (this.inputNames.has(name)) throw new Error(`graph ${this.name}: input '${name}' declared twice`);
    this.inputNames.add(name);
    this.inputs.push({ name, dtype, shape: [...shape] });
    if (options.invariant) this.invariantInputs.add(name);
    return new SymTensor(this, name, dtype, [...shape]);
  }

  output(name: string, t: SymTensor): void {
    let src = t;
    if (t.name !== name) {
      this.items.push({
        opType: 'Identity',
        domain: '',
        inputs: [t.name],
        outputs: [name],
        outputInfo: [{ dtype: t.dtype, shape: t.shape }],
        attrs: {},
        name: `${name}/identity`,
        path: this.path,
        constant: false,
        outputCopy: true,
      });
      src = new SymTensor(this, name, t.dtype, t.shape);
    }
    this.outputs.push({ name: src.name, dtype: src.dtype, shape: [...src.shape] });
  }

  /** A small inline constant (shapes, scales, frequencies). */
  constant(
    values: Float32Array | BigInt64Array | Int32Array,
    shape: readonly number[],
    base = 'const',
  ): SymTensor {
    const dtype: DType =
      values instanceof Float32Array ? 'float32' : values instanceof Int32Array ? 'int32' : 'int64';
    const name = this.freshName(base);
    const raw = new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
    this.constants.push({ name, dtype, shape: [...shape], raw });
    this.constantNames.add(name);
    return new SymTensor(this, name, dtype, [...shape]);
  }

  constFloat(values: readonly number[], shape: readonly number[] = [values.length]): SymTensor {
    return this.constant(Float32Array.from(values), shape);
  }

  constInt64(values: readonly number[], shape: readonly number[] = [values.length]): SymTensor {
    return this.constant(
      BigInt64Array.from(values, (v) => BigInt(v)),
      shape,
      'shape',
    );
  }

  /**
   * A float32 weight by its checkpoint key (relative to the current module path), checked against the shape
   * the config implies. F16/BF16 weights stay in their stored dtype and are widened in the graph.
   */
  param(relKey: string, shape: readonly number[]): SymTensor {
    const key = this.path ? `${this.path}.${relKey}` : relKey;
    const cached = this.weightTensors.get(key);
    if (cached) return cached;
    if (!this.store) throw new Error(`graph ${this.name}: no weights given, but '${key}' is needed`);
    const entry = this.store.get(key, shape);
    const dtype = SAFETENSORS_TO_DTYPE[entry.dtype]!;
    this.weights.set(key, { name: key, entry, dtype });
    this.constantNames.add(key);
    let t = new SymTensor(this, key, dtype, [...shape]);
    if (dtype !== 'float32') {
      [t] = this.node(
        'Cast',
        [t],
        [{ dtype: 'float32', shape }],
        { to: { type: 'int', value: 1 } },
        '',
        'widen',
      );
    }
    this.weightTensors.set(key, t!);
    return t!;
  }

  /** The stored layout of a weight tensor returned by param() (undefined: plain row-major). */
  weightLayout(t: SymTensor): string | undefined {
    return this.weights.get(t.name)?.entry.layout;
  }

  /** True when the store has this key (for optional weights such as biases). */
  hasParam(relKey: string): boolean {
    const key = this.path ? `${this.path}.${relKey}` : relKey;
    return this.store?.has(key) ?? false;
  }

  /** Emits one ONNX node. Output dtypes and shapes come from the op's own shape logic. */
  node(
    opType: string,
    inputs: ReadonlyArray<SymTensor | null>,
    outs: ReadonlyArray<{ dtype: DType; shape: readonly number[] }>,
    attrs: Record<string, Attr> = {},
    domain = '',
    base = opType,
  ): SymTensor[] {
    for (const i of inputs) {
      if (i && i.graph !== this)
        throw new Error(`${opType} at '${this.path}': input ${i.name} is from another graph`);
    }
    const outputs = outs.map((o) => new SymTensor(this, this.freshName(base), o.dtype, [...o.shape]));
    const inputNames = inputs.map((i) => (i ? i.name : ''));
    const constant = inputNames.every((n) => n === '' || this.constantNames.has(n));
    if (constant) for (const o of outputs) this.constantNames.add(o.name);
    this.items.push({
      opType,
      domain,
      inputs: inputNames,
      outputs: outputs.map((o) => o.name),
      outputInfo: outputs.map((o) => ({ dtype: o.dtype, shape: o.shape })),
      attrs,
      name: outputs[0]?.name ?? this.freshName(opType),
      path: this.path,
      constant,
    });
    return outputs;
  }

  /**
   * An exchange point: `local` leaves the current segment, the runner hands it to the communicator, and
   * the tensors it returns enter the next segment as `assembled` inputs.
   */
  exchange(
    kind: string,
    local: readonly SymTensor[],
    assembled: ReadonlyArray<{ dtype: DType; shape: readonly number[] }>,
    meta: Record<string, unknown> = {},
  ): SymTensor[] {
    const path = this.path;
    const outs = assembled.map((a, i) => {
      const name = `${path}:${kind}:in${i}`;
      return new SymTensor(this, name, a.dtype, [...a.shape]);
    });
    this.items.push({
      marker: 'exchange',
      exchange: {
        kind,
        path,
        local: local.map((l) => l.name),
        assembled: outs.map((o) => ({ name: o.name, dtype: o.dtype, shape: o.shape })),
        meta,
      },
    });
    return outs;
  }

  /** A segment boundary with no exchange (to publish outputs early, for overlap). */
  split(): void {
    this.items.push({ marker: 'split', path: this.path });
  }

  isConstant(t: SymTensor): boolean {
    return this.constantNames.has(t.name);
  }

  isConstantName(name: string): boolean {
    return this.constantNames.has(name);
  }

  weightBytes(): number {
    let n = 0;
    for (const w of this.weights.values()) n += w.entry.byteLength;
    return n;
  }
}

export function byteSize(dtype: DType, shape: readonly number[]): number {
  let n = DTYPE_SIZE[dtype];
  for (const d of shape) n *= d;
  return n;
}
