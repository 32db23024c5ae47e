import type { Tensor } from '../io/tensor.js';
import type { GraphBuilder } from './builder.js';
import { CompiledGraph, type HostTensor } from './runner.js';
import { planSegments } from './segments.js';
import type { EngineOptions } from './session.js';

/**
 * Compiled graphs of one model, keyed by what they were specialised for (input shapes, exchange mode).
 * Graphs have static shapes, so a new resolution or batch size compiles once and is then reused.
 */
export class GraphCache {
  private readonly graphs = new Map<string, Promise<CompiledGraph>>();

  constructor(readonly engine: EngineOptions) {}

  get(key: string, build: () => GraphBuilder): Promise<CompiledGraph> {
    let g = this.graphs.get(key);
    if (!g) {
      g = CompiledGraph.compile(planSegments(build()), this.engine);
      g.catch(() => this.graphs.delete(key));
      this.graphs.set(key, g);
    }
    return g;
  }

  get size(): number {
    return this.graphs.size;
  }

  async dispose(): Promise<void> {
    const all = [...this.graphs.values()];
    this.graphs.clear();
    for (const g of all) await (await g).dispose();
  }
}

/** A float32 runner output as a public Tensor. */
export function toTensor(h: HostTensor | undefined, what: string): Tensor {
  if (!h) throw new Error(`${what}: the graph produced no such output`);
  if (!(h.data instanceof Float32Array)) throw new Error(`${what}: expected float32 data`);
  return { data: h.data, shape: [...h.shape] };
}
