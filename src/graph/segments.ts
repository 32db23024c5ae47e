// Cuts a built graph into segments at its exchange and split markers (the planner of stable-diffusion.cpp's
// graph cuts). Each segment becomes one ONNX graph whose inputs are typed: a graph input, a tensor an
// earlier segment produced, or an exchange result; weights stay external initializers.
import {
  type BuiltNode,
  type ExchangeMarker,
  type GraphBuilder,
  type GraphItem,
  isMarker,
  type WeightUse,
} from './builder.js';
import type { DType } from './dtype.js';
import type { OnnxGraph, OnnxInitializer, OnnxNode, OnnxValueInfo } from './onnx-model.js';

export type SegmentInputSource = 'graph-input' | 'earlier-segment' | 'exchange';

export interface SegmentInput extends OnnxValueInfo {
  source: SegmentInputSource;
}

export interface SegmentPlan {
  index: number;
  /** Module path where the segment starts. */
  path: string;
  graph: OnnxGraph;
  inputs: SegmentInput[];
  outputs: OnnxValueInfo[];
  weights: WeightUse[];
  /** The exchange that follows this segment, if any. */
  exchange?: ExchangeMarker;
  /** A prologue that depends only on invariant inputs: its results are reused while they are unchanged. */
  invariant?: boolean;
}

export interface GraphPlan {
  name: string;
  segments: SegmentPlan[];
  inputs: OnnxValueInfo[];
  outputs: OnnxValueInfo[];
  /** For each tensor passed between segments: the index of the last segment (or exchange) that reads it. */
  lastUse: ReadonlyMap<string, number>;
  /** Graph inputs the invariant prologue (segment 0) is computed from. */
  invariantInputs: readonly string[];
}

/**
 * The builder's items without the Identity copies that `output()` adds to give a tensor its output name:
 * where a node of the graph makes that tensor, the node writes the output itself. ORT cannot remove such
 * a copy (a graph output must be its own tensor), and each costs a pass over the data: the fresh K/V of
 * every self-attention, in an asynchronous step. A tensor that is a graph input, a weight, a constant, an
 * exchange local, another output, or the source of an earlier output keeps its copy.
 */
function withoutOutputCopies(b: GraphBuilder): GraphItem[] {
  const outputs = new Set(b.outputs.map((o) => o.name));
  const locals = new Set<string>();
  const made = new Set<string>();
  for (const item of b.items) {
    if (isMarker(item)) {
      if (item.marker === 'exchange') for (const l of item.exchange.local) locals.add(l);
    } else if (!item.constant) for (const o of item.outputs) made.add(o);
  }
  const renamed = new Map<string, string>();
  const dropped = new Set<BuiltNode>();
  for (const item of b.items) {
    if (isMarker(item) || !item.outputCopy) continue;
    const [name, source] = [item.outputs[0]!, item.inputs[0]!];
    if (!made.has(source) || outputs.has(source) || locals.has(source) || renamed.has(source)) continue;
    renamed.set(source, name);
    dropped.add(item);
  }
  if (renamed.size === 0) return b.items;
  const rename = (names: string[]): string[] => names.map((n) => renamed.get(n) ?? n);
  return b.items.flatMap((item): GraphItem[] => {
    if (isMarker(item)) return [item];
    if (dropped.has(item)) return [];
    return [{ ...item, inputs: rename(item.inputs), outputs: rename(item.outputs) }];
  });
}

/** Nodes computed only from invariant inputs and constants (not from constants alone). */
function invariantNodes(b: GraphBuilder, items: readonly GraphItem[]): Set<BuiltNode> {
  const known = new Set(b.invariantInputs);
  const out = new Set<BuiltNode>();
  if (known.size === 0) return out;
  for (const item of items) {
    if (isMarker(item) || item.constant) continue;
    const ok = item.inputs.every((i) => i === '' || known.has(i) || b.weights.has(i) || b.isConstantName(i));
    if (!ok) continue;
    out.add(item);
    for (const o of item.outputs) known.add(o);
  }
  return out;
}

interface TensorInfo {
  dtype: DType;
  shape: readonly number[];
}

export function planSegments(b: GraphBuilder): GraphPlan {
  const items = withoutOutputCopies(b);
  const prologue = invariantNodes(b, items);
  const groups: BuiltNode[][] = prologue.size > 0 ? [[...prologue], []] : [[]];
  const markers: Array<ExchangeMarker | undefined> = prologue.size > 0 ? [undefined] : [];
  const groupPaths: string[] = prologue.size > 0 ? ['prologue', ''] : [''];
  for (const item of items) {
    if (!isMarker(item) && prologue.has(item)) continue;
    if (isMarker(item)) {
      markers.push(item.marker === 'exchange' ? item.exchange : undefined);
      groups.push([]);
      groupPaths.push(item.marker === 'exchange' ? item.exchange.path : item.path);
      continue;
    }
    groups[groups.length - 1]!.push(item);
  }

  const info = new Map<string, TensorInfo>();
  const producer = new Map<string, number>(); // tensor → segment index
  const constantProducer = new Map<string, BuiltNode>();
  const nodeOrder = new Map<BuiltNode, number>();
  let order = 0;
  for (const v of b.inputs) info.set(v.name, v);
  groups.forEach((g, s) => {
    for (const n of g) {
      nodeOrder.set(n, order++);
      n.outputs.forEach((o, i) => {
        info.set(o, n.outputInfo[i]!);
        if (n.constant) constantProducer.set(o, n);
        else producer.set(o, s);
      });
    }
  });
  const exchangeInputs = new Map<string, number>(); // assembled tensor → first segment it may enter
  markers.forEach((m, k) => {
    for (const a of m?.assembled ?? []) {
      info.set(a.name, a);
      exchangeInputs.set(a.name, k + 1);
    }
  });
  const graphInputs = new Set(b.inputs.map((i) => i.name));
  const constantsByName = new Map<string, OnnxInitializer>(b.constants.map((c) => [c.name, c]));

  const segOutputs: Array<Set<string>> = groups.map(() => new Set());
  const lastUse = new Map<string, number>();
  const noteUse = (name: string, s: number): void => {
    lastUse.set(name, Math.max(lastUse.get(name) ?? -1, s));
  };

  const plans = groups.map((g, s) => {
    const nodes: BuiltNode[] = [];
    const inputs = new Map<string, SegmentInput>();
    const consts = new Map<string, OnnxInitializer>();
    const weights = new Map<string, WeightUse>();
    const constNodes = new Set<BuiltNode>();

    // Pulls in whatever a tensor name needs inside segment s.
    const require = (name: string): void => {
      if (name === '') return;
      const w = b.weights.get(name);
      if (w) {
        weights.set(name, w);
        return;
      }
      const c = constantsByName.get(name);
      if (c) {
        consts.set(name, c);
        return;
      }
      const cn = constantProducer.get(name);
      if (cn) {
        if (!constNodes.has(cn)) {
          constNodes.add(cn);
          for (const i of cn.inputs) require(i);
        }
        return;
      }
      const p = producer.get(name);
      if (p === s) return;
      const t = info.get(name)!;
      if (p !== undefined) {
        if (p > s)
          throw new Error(`graph ${b.name}: tensor ${name} is used in segment ${s} before it is made`);
        segOutputs[p]!.add(name);
        inputs.set(name, { name, ...t, source: 'earlier-segment' });
      } else if (graphInputs.has(name)) {
        inputs.set(name, { name, ...t, source: 'graph-input' });
      } else if (exchangeInputs.has(name)) {
        if (exchangeInputs.get(name)! > s)
          throw new Error(`graph ${b.name}: ${name} used before its exchange`);
        inputs.set(name, { name, ...t, source: 'exchange' });
      } else {
        throw new Error(`graph ${b.name}: tensor '${name}' is used but never defined`);
      }
      noteUse(name, s);
    };

    for (const n of g) {
      if (n.constant) continue;
      for (const i of n.inputs) require(i);
      nodes.push(n);
    }
    // Graph outputs made by a constant-only chain must still be computed somewhere: here.
    for (const o of b.outputs) if (constantProducer.has(o.name) && s === 0) require(o.name);
    const all = [...constNodes, ...nodes].sort((x, y) => nodeOrder.get(x)! - nodeOrder.get(y)!);
    return { s, all, inputs, consts, weights, constNodes };
  });

  // Exchange locals and graph outputs leave the segment that made them.
  markers.forEach((m, k) => {
    for (const l of m?.local ?? []) {
      const p = producer.get(l);
      if (p !== undefined) segOutputs[p]!.add(l);
      noteUse(l, k);
    }
  });
  for (const o of b.outputs) {
    const p = producer.get(o.name) ?? (constantProducer.has(o.name) ? 0 : undefined);
    if (p !== undefined) segOutputs[p]!.add(o.name);
  }

  const segments: SegmentPlan[] = plans.map(({ s, all, inputs, consts, weights }) => {
    const outputs = [...segOutputs[s]!].map((name) => ({ name, ...info.get(name)! }));
    const onnxNodes: OnnxNode[] = all.map((n) => ({
      opType: n.opType,
      domain: n.domain,
      inputs: n.inputs,
      outputs: n.outputs,
      attrs: n.attrs,
      name: n.name,
    }));
    const initializers: OnnxInitializer[] = [...consts.values()];
    for (const w of weights.values()) {
      initializers.push({ name: w.name, dtype: w.dtype, shape: w.entry.shape });
    }
    const m = markers[s];
    return {
      index: s,
      path: groupPaths[s]!,
      graph: {
        name: `${b.name}#${s}`,
        nodes: onnxNodes,
        inputs: [...inputs.values()].map(({ name, dtype, shape }) => ({ name, dtype, shape })),
        outputs,
        initializers,
      },
      inputs: [...inputs.values()],
      outputs,
      weights: [...weights.values()],
      ...(m ? { exchange: m } : {}),
      ...(s === 0 && prologue.size > 0 ? { invariant: true } : {}),
    };
  });
  const invariantInputs = prologue.size > 0 ? [...b.invariantInputs] : [];
  return { name: b.name, segments, inputs: b.inputs, outputs: b.outputs, lastUse, invariantInputs };
}
