// lowrank: LoRA fine-tuning for Node.js. The public API, layer by layer (see DESIGN.md).

// ---- tensors, autograd, runtime ----
export * from "./tensor/index.js";
export { info, setNumThreads, synchronize, type BuildInfo } from "./runtime.js";
export { NativeAddonError } from "./native/index.js";

// ---- ops, modules, optimizers ----
export * from "./ops/index.js";
export * from "./nn/index.js";
export * from "./optim/index.js";

// ---- files ----
export { writeFileAtomic, writeFileAtomicAsync, writeJsonAtomic, writeJsonAtomicAsync, type FileData } from "./io/atomic.js";
export {
  readSafetensors, parseSafetensors, readShardedSafetensors, toTensor, fromTensor, serializeSafetensors,
  writeSafetensors, writeSafetensorsAsync, SafetensorsFile, MAX_HEADER_BYTES, SAFETENSORS_INDEX_FILE,
  type SafetensorsDType, type SafetensorsTensor, type SafetensorsEntry, type SafetensorsInput, type SavableDType, type ToTensorOptions,
} from "./io/safetensors.js";
export { f16BitsToF32, f32ToF16Bits } from "./io/float16.js";

// ---- models ----
export { GPT2Tokenizer, END_OF_TEXT, BYTE_SYMBOLS, byteLevelWords, type TokenizerSpec, type EncodeOptions, type DecodeOptions } from "./models/tokenizer.js";
export { PreTrainedTokenizer, type PretrainedTokenizerFiles, type PretrainedEncodeOptions, type PretrainedDecodeOptions } from "./models/pretrained-tokenizer.js";
export { AutoTokenizer, type AnyTokenizer } from "./models/auto-tokenizer.js";
export { renderChatTemplate, selectChatTemplate, readChatTemplate, readChatTemplateFile, type ApplyChatTemplateOptions, type ChatMessage, type ChatTemplateSpec, type RenderChatOptions } from "./models/chat-template.js";
export { GPT2Config, type GPT2ConfigInit } from "./models/gpt2/config.js";
export { GPT2LMHeadModel, GPT2Model, GPT2Block, GPT2Attention, GPT2MLP, causalLMLoss, type CausalLMInput, type CausalLMOutput } from "./models/gpt2/model.js";
export { generate, sampleToken, type GenerateOptions, type GenerationModel } from "./models/generate.js";
export { KVCache, type CausalDecoder, type GenerationSpec, type LayerCache } from "./models/kvcache.js";
export { LlamaConfig, LLAMA_MODEL_TYPES, type LlamaConfigInit, type LlamaModelType } from "./models/llama/config.js";
export { LlamaForCausalLM, LlamaModel, LlamaDecoderLayer, LlamaAttention, LlamaMLP, type LlamaInput } from "./models/llama/model.js";
export { AutoModelForCausalLM, AUTO_MODEL_TYPES, type CausalLM } from "./models/auto.js";
export { type LoadOptions } from "./models/checkpoint.js";

// ---- PEFT ----
export { LoraConfig, TASK_TYPES, LOWRANK_PEFT_VERSION, PEFT_FORMAT_VERSION, DEFAULT_TARGET_MODULES, type LoraConfigInit, type TaskType, type LoraBias, type InitLoraWeights, type WarningHandler } from "./peft/config.js";
export { selectTargets, planInjection, countLoraParameters, type InjectionPlan, type LoraParameterCount } from "./peft/targets.js";
export type { ModuleInfo, ModuleKind, ModuleShape } from "./nn/shapes.js";
export { ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, DEFAULT_ADAPTER_NAME, adapterPaths, adapterStateKey, parseAdapterStateKey, formatTrainableParameters, type LoraTensorName, type ParsedAdapterKey } from "./peft/format.js";
export { PeftModel, LoraModel, getPeftModel, estimateLora, checkLoraFits, type BaseModel, type PeftOptions, type LoraEstimate } from "./peft/model.js";
export { LoraLinear, LoraEmbedding, UnsafeMergeError, type LoraLayer } from "./peft/layer.js";
export { ModulesToSaveWrapper, cloneModule } from "./peft/modules-to-save.js";
export { DoraMagnitude } from "./peft/dora.js";
export { type WeightedAdapterOptions, type CombinationType } from "./peft/weighted.js";
export { type BaseMutatingInit } from "./peft/init.js";
export { LoRALayer, LinearWithLoRA, addLoraToModel, mergeLoraWeights, type LoRALayerOptions } from "./peft/chapter.js";

// ---- training ----
export * from "./train/data.js";
export { chatTokens, parseMessages, prefixTokenCount, type ChatTokenizer, type ChatTokens } from "./train/chat-data.js";
export * from "./train/template.js";
export * from "./train/collate.js";
export { Trainer, NonFiniteLossError, TRAINER_DEFAULTS, type TrainerOptions, type TrainableModel, type TrainBatchInput, type TrainResult, type TrainerEvents, type EvalEvent, type CheckpointEvent, type ScheduleName } from "./train/trainer.js";
export { writeCheckpoint, readCheckpoint, listCheckpoints, latestCheckpoint, pruneCheckpoints, resolveResume, CHECKPOINT_FILES, LATEST_FILE, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, type TrainerState, type CheckpointContents, type LoadedCheckpoint } from "./train/checkpoint.js";
export { MetricsLog, writeLossChart, type StepRecord } from "./train/metrics.js";
export { ProgressReporter, formatDuration, type ProgressOptions } from "./train/progress.js";
export { fineTune, holdsRun, FineTuneOptionError, FINE_TUNE_DEFAULTS, type FineTuneOptions, type FineTuneResult, type FineTuneStart, type LoadedBaseModel, type TemplateSource } from "./train/fine-tune.js";
export { acquireRunLock, RunLockedError, LOCK_FILE, type RunLock } from "./train/lock.js";
export { runDemo, DEMO_TEMPLATE, type DemoOptions, type DemoResult } from "./train/demo.js";

// ---- analysis, plots, dense linear algebra ----
export * as analysis from "./analysis/index.js";
export * as linalg from "./linalg/index.js";
export { lineChart, linearAxis, logAxis, niceStep, formatTicks, PALETTE, renderSvg, renderPng, encodePng, writeChart,
  type Chart, type ChartItem, type LineChartOptions, type Series, type Point, type Rgb, type Axis, type Tick, type ChartTarget } from "./plot/index.js";
