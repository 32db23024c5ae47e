export type DType = 'float32' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'bool';

const CODES: Record<DType, number> = {
  float32: 1,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  bfloat16: 16,
};

export const DTYPE_SIZE: Record<DType, number> = {
  float32: 4,
  float16: 2,
  bfloat16: 2,
  int64: 8,
  int32: 4,
  bool: 1,
};

export function onnxTypeCode(d: DType): number {
  return CODES[d];
}
