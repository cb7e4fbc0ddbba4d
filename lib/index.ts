// lowrank: LoRA fine-tuning for Node.js.
export * from "./tensor/index.js";
export { noGrad, isGradEnabled } from "./autograd/tape.js";
export * from "./ops/index.js";
export { info, setNumThreads, synchronize, type BuildInfo } from "./runtime.js";
