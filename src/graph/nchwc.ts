// ONNX Runtime's fastest CPU convolution is its NCHWc kernel (MLAS, com.microsoft.nchwc domain): weights in
// a channel-blocked layout, activations reordered around it. ORT's 'all' optimisation level rewrites Conv
// into it, but only by giving each session a private, reordered copy of every conv weight. Ranks that map
// one shared weight copy run at the 'extended' level instead, so the model code emits the NCHWc nodes
// itself, against weights reordered once into the shared copy.
import ort from 'onnxruntime-node';
import type { WeightRelayout } from '../io/aligned-weights.js';
import { attr, NCHWC_DOMAIN, type OnnxGraph, type OnnxNode } from './onnx-model.js';
import { createSession } from './session.js';

/** The layout tag of a conv weight reordered for the NCHWc kernel with `block` channels per block. */
export function nchwcLayout(block: number): string {
  return `OIHWBiBo${block}`;
}

/** The block size of an NCHWc layout tag, or undefined for a plain OIHW weight. */
export function nchwcBlockOf(layout: string | undefined): number | undefined {
  const m = layout ? /^OIHWBiBo(\d+)$/.exec(layout) : null;
  return m ? Number(m[1]) : undefined;
}

/** Whether a conv weight of this shape can run in the NCHWc kernel (group 1, whole channel blocks). */
export function nchwcEligible(shape: readonly number[], block: number): boolean {
  return shape.length === 4 && shape[0]! % block === 0 && shape[1]! % block === 0;
}

/**
 * OIHW → OIHWBiBo: for each block of `block` output channels, each block of input channels and each kernel
 * tap, a block × block tile stored input-channel-major (MLAS's MlasReorderFilterOIHWBiBo layout).
 */
export function reorderFilterOIHWBiBo(
  src: Float32Array,
  shape: readonly number[],
  block: number,
): Float32Array {
  const [o, i, kh, kw] = shape as [number, number, number, number];
  if (!nchwcEligible(shape, block)) {
    throw new Error(`NCHWc filter [${shape.join(', ')}]: channels must be whole blocks of ${block}`);
  }
  if (src.length !== o * i * kh * kw) {
    throw new Error(
      `NCHWc filter [${shape.join(', ')}]: expected ${o * i * kh * kw} values, found ${src.length}`,
    );
  }
  const k = kh * kw;
  const dst = new Float32Array(src.length);
  let d = 0;
  for (let ob = 0; ob < o; ob += block) {
    for (let ib = 0; ib < i; ib += block) {
      for (let t = 0; t < k; t++) {
        for (let bi = 0; bi < block; bi++) {
          const base = (ib + bi) * k + t;
          for (let bo = 0; bo < block; bo++) dst[d++] = src[(ob + bo) * i * k + base]!;
        }
      }
    }
  }
  return dst;
}

/** Reorders every eligible conv filter of a weight copy for the NCHWc kernel (see alignWeights). */
export function nchwcRelayout(block: number): WeightRelayout {
  return (entry, data) =>
    nchwcEligible(entry.shape, block)
      ? { data: reorderFilterOIHWBiBo(data, entry.shape, block), layout: nchwcLayout(block) }
      : undefined;
}

let probed: Promise<number> | undefined;

/**
 * The NCHWc block size of this machine's ORT build (MLAS picks it from the CPU: 8 with AVX2, 16 with
 * AVX-512), or 0 where the kernel is missing. ORT does not expose it, so a 16-channel 3x3 convolution is
 * run with its filter reordered for each candidate and compared with a direct float64 convolution.
 */
export function nchwcBlockSize(): Promise<number> {
  probed ??= probeBlockSize();
  return probed;
}

async function probeBlockSize(): Promise<number> {
  const c = 16;
  const hw = 5;
  const x = Float32Array.from({ length: c * hw * hw }, (_, n) => Math.sin(n * 0.37));
  const w = Float32Array.from({ length: c * c * 9 }, (_, n) => Math.cos(n * 0.11) * 0.1);
  const expected = new Float64Array(c * hw * hw);
  for (let oc = 0; oc < c; oc++) {
    for (let y = 0; y < hw; y++) {
      for (let xx = 0; xx < hw; xx++) {
        let s = 0;
        for (let ic = 0; ic < c; ic++) {
          for (let dy = 0; dy < 3; dy++) {
            for (let dx = 0; dx < 3; dx++) {
              const sy = y + dy - 1;
              const sx = xx + dx - 1;
              if (sy < 0 || sy >= hw || sx < 0 || sx >= hw) continue;
              s += w[((oc * c + ic) * 3 + dy) * 3 + dx]! * x[(ic * hw + sy) * hw + sx]!;
            }
          }
        }
        expected[(oc * hw + y) * hw + xx] = s;
      }
    }
  }
  for (const block of [16, 8]) {
    const filter = reorderFilterOIHWBiBo(w, [c, c, 3, 3], block);
    const graph = nchwcConvProbe(c, hw, filter);
    try {
      const session = await createSession(graph, [], { threads: 1, optimization: 'disabled' });
      try {
        const out = await session.run({ x: new ort.Tensor('float32', x, [1, c, hw, hw]) });
        const y = out.y!.data as Float32Array;
        if (y.every((v, n) => Math.abs(v - expected[n]!) < 1e-4)) return block;
      } finally {
        await session.release();
      }
    } catch {
      // No NCHWc kernel in this build, or not this block size: try the next candidate.
    }
  }
  return 0;
}

function nchwcConvProbe(c: number, hw: number, filter: Float32Array): OnnxGraph {
  const node = (
    opType: string,
    inputs: string[],
    output: string,
    attrs: OnnxNode['attrs'] = {},
  ): OnnxNode => ({
    opType,
    domain: NCHWC_DOMAIN,
    inputs,
    outputs: [output],
    attrs,
    name: output,
  });
  return {
    name: 'nchwc-probe',
    nodes: [
      node('ReorderInput', ['x'], 'xb'),
      node('Conv', ['xb', 'w'], 'yb', {
        kernel_shape: attr.ints([3, 3]),
        pads: attr.ints([1, 1, 1, 1]),
      }),
      node('ReorderOutput', ['yb'], 'y', { channels: attr.int(c) }),
    ],
    inputs: [{ name: 'x', dtype: 'float32', shape: [1, c, hw, hw] }],
    outputs: [{ name: 'y', dtype: 'float32', shape: [1, c, hw, hw] }],
    initializers: [
      {
        name: 'w',
        dtype: 'float32',
        shape: [c, c, 3, 3],
        raw: new Uint8Array(filter.buffer, filter.byteOffset, filter.byteLength),
      },
    ],
  };
}
