// FLOPs of one run of a built graph, counted from the node shapes the builder recorded: 2 per multiply-add of
// Conv, Gemm, MatMul and com.microsoft.MultiHeadAttention. Elementwise ops, norms and softmax are left out
// (they are memory-bound and a few percent of a UNet's arithmetic).
import { type BuiltNode, type GraphBuilder, isMarker } from '../graph/builder.js';

export interface FlopCount {
  /** Floating-point operations (2 per multiply-add) of one run. */
  total: number;
  /**
   * The part computed from invariant inputs only (the text conditioning: cross-attention K/V, SDXL's added
   * embeddings). The runner reuses it while those inputs keep their values, so a denoising step costs
   * `total - invariant`.
   */
  invariant: number;
  byOp: Record<string, number>;
  /** Counted nodes per op type. */
  nodes: Record<string, number>;
}

type Shapes = ReadonlyMap<string, readonly number[]>;

/** Every tensor name the graph knows, with its static shape. */
function tensorShapes(b: GraphBuilder): Map<string, readonly number[]> {
  const shapes = new Map<string, readonly number[]>();
  for (const i of b.inputs) shapes.set(i.name, i.shape);
  for (const c of b.constants) shapes.set(c.name, c.shape);
  for (const [name, w] of b.weights) shapes.set(name, w.entry.shape);
  for (const item of b.items) {
    if (isMarker(item)) {
      if (item.marker === 'exchange') for (const a of item.exchange.assembled) shapes.set(a.name, a.shape);
      continue;
    }
    for (const [k, o] of item.outputs.entries()) shapes.set(o, item.outputInfo[k]!.shape);
  }
  return shapes;
}

function product(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}

function shapeOf(n: BuiltNode, shapes: Shapes, k: number): readonly number[] {
  const s = shapes.get(n.inputs[k] ?? '');
  if (!s)
    throw new Error(
      `countFlops: ${n.opType} '${n.name}' at '${n.path}': no shape known for input ${k} '${n.inputs[k]}'`,
    );
  return s;
}

function intAttr(n: BuiltNode, name: string, fallback: number): number {
  const a = n.attrs[name];
  return a?.type === 'int' ? a.value : fallback;
}

function convFlops(n: BuiltNode, shapes: Shapes): number {
  // weight [Cout, Cin/groups, kh, kw]; output [N, Cout, Hout, Wout]
  const w = shapeOf(n, shapes, 1);
  const out = n.outputInfo[0]!.shape;
  return 2 * product(out) * product(w.slice(1));
}

function gemmFlops(n: BuiltNode, shapes: Shapes): number {
  const a = shapeOf(n, shapes, 0);
  const b = shapeOf(n, shapes, 1);
  const k = intAttr(n, 'transA', 0) ? a[0]! : a[1]!;
  const cols = intAttr(n, 'transB', 0) ? b[0]! : b[1]!;
  const rows = intAttr(n, 'transA', 0) ? a[1]! : a[0]!;
  return 2 * rows * cols * k;
}

function matMulFlops(n: BuiltNode, shapes: Shapes): number {
  // numpy matmul: a 1-D operand is a row (left) or a column (right); leading axes broadcast, so the output
  // shape already holds the broadcast batch and M·N.
  const a = shapeOf(n, shapes, 0);
  const k = a[a.length - 1]!;
  return 2 * product(n.outputInfo[0]!.shape) * k;
}

function multiHeadAttentionFlops(n: BuiltNode, shapes: Shapes): number {
  const q = shapeOf(n, shapes, 0);
  const k = shapeOf(n, shapes, 1);
  const v = shapeOf(n, shapes, 2);
  if (q.length !== 3 || k.length !== 3 || v.length !== 3) {
    throw new Error(
      `countFlops: MultiHeadAttention '${n.name}' at '${n.path}': only [B, S, heads·d] inputs are counted, got ` +
        `[${q.join(', ')}], [${k.join(', ')}], [${v.join(', ')}]`,
    );
  }
  const [batch, sq, hd] = q as [number, number, number];
  const sk = k[1]!;
  // q·kᵀ over heads·d, then probabilities·v over heads·dv
  return 2 * batch * sq * sk * hd + 2 * batch * sq * sk * v[2]!;
}

const COUNTERS: Record<string, (n: BuiltNode, shapes: Shapes) => number> = {
  Conv: convFlops,
  Gemm: gemmFlops,
  MatMul: matMulFlops,
  MultiHeadAttention: multiHeadAttentionFlops,
};

/**
 * Counts the FLOPs of one run of `b`. Nodes on weights and constants only are left out: ORT folds them
 * once at load time.
 */
export function countFlops(b: GraphBuilder): FlopCount {
  const shapes = tensorShapes(b);
  const result: FlopCount = { total: 0, invariant: 0, byOp: {}, nodes: {} };
  // Tensors that depend on invariant inputs, weights and constants only (as the segment planner decides).
  const invariant = new Set<string>(b.invariantInputs);
  for (const item of b.items) {
    if (isMarker(item) || item.constant) continue;
    const fixed =
      invariant.size > 0 &&
      item.inputs.every((i) => i === '' || invariant.has(i) || b.weights.has(i) || b.isConstantName(i));
    if (fixed) for (const o of item.outputs) invariant.add(o);
    const counter = COUNTERS[item.opType];
    if (!counter) continue;
    if (item.opType === 'MultiHeadAttention' && item.domain !== 'com.microsoft') continue;
    const f = counter(item, shapes);
    result.total += f;
    if (fixed) result.invariant += f;
    result.byOp[item.opType] = (result.byOp[item.opType] ?? 0) + f;
    result.nodes[item.opType] = (result.nodes[item.opType] ?? 0) + 1;
  }
  return result;
}
