// Small host-side tensor helpers for assembling pipeline batches.
import type { Tensor } from '../io/tensor.js';

export function zerosLike(t: Tensor): Tensor {
  return { data: new Float32Array(t.data.length), shape: [...t.shape] };
}

/** Concatenates along the batch axis. */
export function concatBatch(...ts: Tensor[]): Tensor {
  const rest = ts[0]!.shape.slice(1);
  for (const t of ts) {
    if (t.shape.slice(1).join() !== rest.join()) {
      throw new Error(
        `cannot stack batches of shape [${ts[0]!.shape.join(', ')}] and [${t.shape.join(', ')}]`,
      );
    }
  }
  const out = new Float32Array(ts.reduce((n, t) => n + t.data.length, 0));
  let at = 0;
  for (const t of ts) {
    out.set(t.data, at);
    at += t.data.length;
  }
  return { data: out, shape: [ts.reduce((n, t) => n + t.shape[0]!, 0), ...rest] };
}

/** Repeats each batch entry `times` times in place (diffusers' per-prompt repeat for num_images_per_prompt). */
export function repeatEach(t: Tensor, times: number): Tensor {
  if (times === 1) return t;
  const n = t.shape[0]!;
  const per = t.data.length / n;
  const out = new Float32Array(t.data.length * times);
  for (let i = 0; i < n; i++) {
    for (let r = 0; r < times; r++) out.set(t.data.subarray(i * per, (i + 1) * per), (i * times + r) * per);
  }
  return { data: out, shape: [n * times, ...t.shape.slice(1)] };
}
