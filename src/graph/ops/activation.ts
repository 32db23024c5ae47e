import type { SymTensor } from '../builder.js';
import { attr } from '../onnx-model.js';
import { normAxis, unary } from './common.js';
import { add, erf, mul, sigmoid, tanh } from './elementwise.js';

/** x·sigmoid(x); ORT fuses the pair. */
export function silu(x: SymTensor): SymTensor {
  return mul(x, sigmoid(x));
}

/** GELU, exact (erf) as torch's default, or the tanh approximation. */
export function gelu(x: SymTensor, approximate: 'none' | 'tanh' = 'none'): SymTensor {
  if (approximate === 'tanh') {
    const inner = mul(add(x, mul(mul(mul(x, x), x), 0.044715)), Math.sqrt(2 / Math.PI));
    return mul(mul(x, 0.5), add(tanh(inner), 1));
  }
  return mul(mul(x, 0.5), add(erf(mul(x, Math.SQRT1_2)), 1));
}

/** CLIP's quick_gelu: x·sigmoid(1.702·x). */
export function quickGelu(x: SymTensor): SymTensor {
  return mul(x, sigmoid(mul(x, 1.702)));
}

export function relu(x: SymTensor): SymTensor {
  return unary('Relu', x);
}

export function softmax(x: SymTensor, axis = -1): SymTensor {
  const a = normAxis('Softmax', x, axis);
  return x.graph.node('Softmax', [x], [{ dtype: x.dtype, shape: x.shape }], { axis: attr.int(a) })[0]!;
}
