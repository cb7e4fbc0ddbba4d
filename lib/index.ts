// lowrank: LoRA fine-tuning for Node.js. The public API, grouped by the layers ARCHITECTURE.md
// describes (tensors, ops, nn, optim, models, peft, train, io), bottom to top. Only what a user
// calls or names in a type is exported here; the helpers the layers share among themselves stay
// in their modules. test/api/exports.test.ts lists these names: a change to the list is a change
// to the API, reviewed as such.

// ---- tensors: creation, autograd, memory scopes, devices, random streams ----
export { Tensor, copyInto, emptyLike, formatShape, isGradEnabled, noGrad, shapeSize, type NestedArray } from "./tensor/tensor.js";
export {
  arange, empty, full, fullLike, kaimingUniform, ones, onesLike, rand, randn, tensor, zeros, zerosLike, type CreateOptions, type RandomOptions,
} from "./tensor/creation.js";
export { Generator, defaultGenerator, manualSeed, type GeneratorState } from "./tensor/random.js";
export { tidy, keep, memory, type DeviceMemory } from "./tensor/scope.js";
export { DTYPES, DTYPE_SIZE, bf16BitsToF32, f32ToBf16Bits, type DType } from "./tensor/dtype.js";
export { cudaAvailable, defaultDevice, parseDevice, type Device, type DeviceLike, type DeviceSpec } from "./tensor/device.js";

// ---- ops: differentiable functions of tensors ----
export { abs, add, addInPlace, addScalar, div, exp, gelu, log, mul, neg, pow, relu, scale, sigmoid, silu, sqrt, square, sub, tanh } from "./ops/elementwise.js";
export { mean, sum } from "./ops/reduce.js";
export { conv1dLinear, linear, matmul } from "./ops/matmul.js";
export { concat, expand, split, stack } from "./ops/shape.js";
export { embedding } from "./ops/embedding.js";
export { layerNorm } from "./ops/layernorm.js";
export { rmsNorm } from "./ops/rmsnorm.js";
export { logSoftmax, softmax } from "./ops/softmax.js";
export { crossEntropy, linearCrossEntropy, type CrossEntropyOptions, type LinearCrossEntropyOptions } from "./ops/crossentropy.js";
export { dropout, type DropoutOptions } from "./ops/dropout.js";
export { scaledDotProductAttention, type AttentionOptions } from "./ops/attention.js";
export { applyRotary, rotaryCosSin, type RotaryOptions } from "./ops/rope.js";
export { loraDelta, loraMerge, type LoraDeltaOptions } from "./ops/lora.js";

// ---- nn: modules and layers ----
export { Module, ModuleList, type LoadStateDictResult, type StateDict } from "./nn/module.js";
export { Conv1D, Dropout, Embedding, LayerNorm, Linear, RMSNorm, type LayerOptions } from "./nn/layers.js";
export type { ModuleInfo, ModuleKind, ModuleShape } from "./nn/shapes.js";

// ---- optim: optimizers, gradient clipping, learning-rate schedules ----
export { AdamW, type AdamWOptions, type AdamWState } from "./optim/adamw.js";
export { SGD, type SGDOptions, type SGDState } from "./optim/sgd.js";
export {
  Optimizer, type BaseOptions, type FlatOptimizerState, type OptimizerStateDict, type ParamGroup, type ParamGroupInput, type Params, type ParamState, type StateSpec,
} from "./optim/optimizer.js";
export { clipGradNorm, gradNorm, type ClipGradNormOptions } from "./optim/clip.js";
export {
  LambdaLR, constantWithWarmupLambda, cosineWithWarmupLambda, getConstantScheduleWithWarmup, getCosineScheduleWithWarmup, getLinearScheduleWithWarmup,
  getScheduler, linearWithWarmupLambda, type LRSchedulerState, type LrLambda, type SchedulableOptimizer, type SchedulerName,
} from "./optim/schedule.js";

// ---- models: GPT-2, Llama, the tokenizer, generation ----
export { GPT2Tokenizer, END_OF_TEXT, BYTE_SYMBOLS, byteLevelWords, type TokenizerSpec, type EncodeOptions, type DecodeOptions } from "./models/tokenizer.js";
export { PreTrainedTokenizer, type PretrainedTokenizerFiles, type PretrainedEncodeOptions, type PretrainedDecodeOptions } from "./models/pretrained-tokenizer.js";
export { AutoTokenizer, type AnyTokenizer } from "./models/auto-tokenizer.js";
export { renderChatTemplate, readChatTemplateFile, type ApplyChatTemplateOptions, type ChatMessage, type ChatTemplateSpec, type RenderChatOptions } from "./models/chat-template.js";
export { GPT2Config, type GPT2ConfigInit } from "./models/gpt2/config.js";
export { GPT2LMHeadModel, GPT2Model, GPT2Block, GPT2Attention, GPT2MLP, causalLMLoss, type CausalLMInput, type CausalLMOutput } from "./models/gpt2/model.js";
export { LlamaConfig, LLAMA_MODEL_TYPES, type LlamaConfigInit, type LlamaModelType } from "./models/llama/config.js";
export { LlamaForCausalLM, LlamaModel, LlamaDecoderLayer, LlamaAttention, LlamaMLP, type LlamaInput } from "./models/llama/model.js";
export { AutoModelForCausalLM, AUTO_MODEL_TYPES, type CausalLM } from "./models/auto.js";
export type { LoadOptions } from "./models/checkpoint.js";
export {
  generate, generateText, streamText, sampleToken, type GenerateOptions, type GenerationModel, type StopReason, type TextGenerationResult, type TextTokenizer,
} from "./models/generate.js";
export { TextStreamer, type TokenDecoder } from "./models/streamer.js";
export { KVCache, type CausalDecoder, type GenerationSpec, type LayerCache } from "./models/kvcache.js";

// ---- peft: LoRA adapters in PEFT's format ----
export {
  LoraConfig, TASK_TYPES, LOWRANK_PEFT_VERSION, PEFT_FORMAT_VERSION, DEFAULT_TARGET_MODULES,
  type LoraConfigInit, type TaskType, type LoraBias, type InitLoraWeights, type WarningHandler,
} from "./peft/config.js";
export {
  PeftModel, LoraModel, getPeftModel, estimateLora, checkLoraFits, type BaseModel, type PeftOptions, type LoadAdapterOptions, type SaveAdapterOptions, type LoraEstimate,
} from "./peft/model.js";
export { LoraLinear, LoraEmbedding, UnsafeMergeError, type LoraLayer } from "./peft/layer.js";
export { ModulesToSaveWrapper } from "./peft/modules-to-save.js";
export { DoraMagnitude } from "./peft/dora.js";
export { countLoraParameters, type LoraParameterCount } from "./peft/targets.js";
export { ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, DEFAULT_ADAPTER_NAME, adapterPaths, type LoraTensorName } from "./peft/format.js";
export type { WeightedAdapterOptions, CombinationType } from "./peft/weighted.js";
export type { BaseMutatingInit } from "./peft/init.js";
// the LoRA chapter's own vocabulary (LoRALayer, LinearWithLoRA), over the same ops
export { LoRALayer, LinearWithLoRA, addLoraToModel, mergeLoraWeights, type LoRALayerOptions } from "./peft/chapter.js";

// ---- training: data, the Trainer, checkpoints, fineTune ----
export {
  IGNORE_INDEX, SeededRandom, loadInstructionData, readJsonl, shuffledIndices, splitTrainEval, tokenizeRecords,
  type AlpacaRecord, type ChatRecord, type PromptCompletionRecord, type DataProblem, type DataRecord, type LoadDataOptions, type LoadedData, type ReadResult, type SplitOptions,
  type TextRecord, type TokenizeOptions, type TokenizeResult, type TokenizedExample, type TokenizerLike,
} from "./train/data.js";
export {
  ALPACA_TEMPLATE, MODEL_TEMPLATE_FILE, formatPrompt, readTemplateFile, resolveTemplate, type PromptTemplate, type ResolvedTemplate, type TemplateSpec,
} from "./train/template.js";
export { DataLoader, padBatch, shardBatch, toTensors, type Batch, type DataLoaderOptions, type HostBatch, type LoaderState } from "./train/collate.js";
export {
  Trainer, NonFiniteLossError, TRAINER_DEFAULTS, type TrainerOptions, type TrainableModel, type TrainBatchInput, type TrainResult,
  type TrainerEvents, type EvalEvent, type CheckpointEvent, type ScheduleName,
} from "./train/trainer.js";
export {
  writeCheckpoint, readCheckpoint, listCheckpoints, latestCheckpoint, resolveResume, type TrainerState, type CheckpointContents, type LoadedCheckpoint,
} from "./train/checkpoint.js";
export { MetricsLog, writeLossChart, type StepRecord } from "./train/metrics.js";
export type { ProgressOptions } from "./train/progress.js";
export {
  fineTune, FineTuneOptionError, FINE_TUNE_DEFAULTS, type FineTuneOptions, type FineTuneResult, type FineTuneStart, type LoadedBaseModel, type TemplateSource,
} from "./train/fine-tune.js";
// data parallel on several GPUs: a rank's communicator (NCCL) and the launcher of the ranks
export { Comm, commFromEnv, ncclAvailable, ncclUniqueId, NcclComm, rankFromEnv, SingleProcessComm } from "./train/distributed.js";
export { launchRanks, type LaunchOptions, type LaunchResult } from "./train/launch.js";
export { RunLockedError } from "./train/lock.js";
export { runDemo, DEMO_TEMPLATE, type DemoOptions, type DemoResult } from "./train/demo.js";

// ---- io: safetensors, half-precision bits, atomic writes ----
export {
  readSafetensors, readSafetensorsAsync, parseSafetensors, readShardedSafetensors, readShardedSafetensorsAsync, toTensor, fromTensor, serializeSafetensors, writeSafetensors, writeSafetensorsAsync,
  SafetensorsFile, SAFETENSORS_INDEX_FILE,
  type SafetensorsDType, type SafetensorsTensor, type SafetensorsEntry, type SafetensorsInput, type SavableDType, type ToTensorOptions,
} from "./io/safetensors.js";
export { f16BitsToF32, f32ToF16Bits } from "./io/float16.js";
export { writeFileAtomic, writeFileAtomicAsync, writeJsonAtomic, writeJsonAtomicAsync, type FileData } from "./io/atomic.js";

// ---- utilities: the runtime, charts, adapter analysis, dense linear algebra ----
export { info, setNumThreads, synchronize, type BuildInfo } from "./runtime.js";
export { NativeAddonError } from "./native/index.js";
export { lineChart, renderSvg, renderPng, writeChart, type Chart, type ChartItem, type LineChartOptions, type Series, type Point, type Rgb, type ChartTarget } from "./plot/index.js";
export * as analysis from "./analysis/index.js";
export * as linalg from "./linalg/index.js";
