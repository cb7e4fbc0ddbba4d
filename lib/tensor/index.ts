export {
  Tensor, StorageRef, contiguousStrides, shapeSize, formatShape, normDim, emptyLike, copyInto, noGrad, isGradEnabled, type NestedArray,
} from "./tensor.js";
export * from "./creation.js";
export { Generator, defaultGenerator, manualSeed, type GeneratorState } from "./random.js";
export { tidy, keep, memory, type DeviceMemory } from "./scope.js";
export { type DType, DTYPES, DTYPE_SIZE, f32ToBf16Bits, bf16BitsToF32 } from "./dtype.js";
export { parseDevice, cudaAvailable, defaultDevice, type Device, type DeviceLike, type DeviceSpec } from "./device.js";
