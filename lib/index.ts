// lowrank: LoRA fine-tuning for Node.js.
export * from "./tensor/index.js";
export { noGrad, isGradEnabled } from "./autograd/tape.js";
export * from "./ops/index.js";
export { info, setNumThreads, synchronize, type BuildInfo } from "./runtime.js";
export { writeFileAtomic, writeFileAtomicAsync, writeJsonAtomic, writeJsonAtomicAsync, type FileData } from "./io/atomic.js";
export {
  readSafetensors, parseSafetensors, readShardedSafetensors, toTensor, fromTensor, serializeSafetensors,
  writeSafetensors, writeSafetensorsAsync, SafetensorsFile, MAX_HEADER_BYTES, SAFETENSORS_INDEX_FILE,
  type SafetensorsDType, type SafetensorsTensor, type SafetensorsEntry, type SafetensorsInput, type SavableDType, type ToTensorOptions,
} from "./io/safetensors.js";
export { f16BitsToF32, f32ToF16Bits } from "./io/float16.js";
export { GPT2Tokenizer, END_OF_TEXT, type TokenizerSpec, type EncodeOptions, type DecodeOptions } from "./models/tokenizer.js";
