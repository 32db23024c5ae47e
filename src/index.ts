// The public API of distrifusion.
export type { AnyTensor, Int64Tensor, Tensor } from './io/tensor.js';
export { readSafetensors, SafetensorsFile, writeSafetensors } from './io/safetensors.js';
export type { WriteSafetensorsOptions } from './io/safetensors.js';
