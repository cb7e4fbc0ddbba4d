export * from "./elementwise.js";
export * from "./reduce.js";
export { matmul, linear, conv1dLinear } from "./matmul.js";
export { concat, stack, split, expand } from "./shape.js";
export { embedding } from "./embedding.js";
export { layerNorm, softmax, logSoftmax, crossEntropy, dropout, type CrossEntropyOptions, type DropoutOptions } from "./nn.js";
export { scaledDotProductAttention, type AttentionOptions } from "./attention.js";
export { loraDelta, type LoraDeltaOptions } from "./lora.js";
