/** A dense float32 tensor in row-major order: what every model takes and returns. */
export interface Tensor {
  data: Float32Array;
  shape: number[];
}

/** Integer tensors (token ids, integer timesteps) as safetensors stores them. */
export interface Int64Tensor {
  data: BigInt64Array;
  shape: number[];
}

export type AnyTensor = Tensor | Int64Tensor;

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function isFloatTensor(t: AnyTensor): t is Tensor {
  return t.data instanceof Float32Array;
}

/** Makes a tensor, checking that the data length matches the shape. */
export function makeTensor(data: Float32Array, shape: readonly number[], what = 'tensor'): Tensor {
  const n = numel(shape);
  if (data.length !== n) {
    throw new Error(`${what}: shape [${shape.join(', ')}] needs ${n} values, found ${data.length}`);
  }
  return { data, shape: [...shape] };
}

export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}
