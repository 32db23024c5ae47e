// torch.nn.functional-shaped graph ops: what model code calls.
export * from './ops/activation.js';
export * from './ops/attention.js';
export * from './ops/conv.js';
export * from './ops/elementwise.js';
export * from './ops/embedding.js';
export * from './ops/linear.js';
export * from './ops/norm.js';
export * from './ops/shape.js';
