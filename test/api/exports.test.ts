// The root module's names, values and types ("type X": a type only). The list is written out, not
// a snapshot that -u rewrites: adding or removing a name here is a change to the public API and
// is reviewed as one (lib/index.ts groups the names and says which helpers stay in their modules).
import { resolve } from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import * as root from "../../lib/index.js";

const EXPORTS = [
  "abs", "AdamW", "type AdamWOptions", "type AdamWState", "ADAPTER_CONFIG_NAME", "ADAPTER_WEIGHTS_NAME", "adapterPaths",
  "add", "addInPlace", "addLoraToModel", "addScalar", "ALPACA_TEMPLATE", "type AlpacaRecord", "analysis", "type AnyTokenizer", "type ApplyChatTemplateOptions", "applyRotary",
  "arange", "type AttentionOptions", "AUTO_MODEL_TYPES", "AutoModelForCausalLM", "AutoTokenizer", "type BaseModel",
  "type BaseMutatingInit", "type BaseOptions", "type Batch", "bf16BitsToF32", "type BuildInfo", "BYTE_SYMBOLS",
  "byteLevelWords", "type CausalDecoder", "type CausalLM", "type CausalLMInput", "causalLMLoss", "type CausalLMOutput",
  "type Chart", "type ChartItem", "type ChartTarget", "type ChatMessage", "type ChatRecord", "type ChatTemplateSpec", "checkLoraFits", "type CheckpointContents", "type CheckpointEvent",
  "clipGradNorm", "type ClipGradNormOptions", "type CombinationType", "Comm", "commFromEnv", "concat", "constantWithWarmupLambda", "Conv1D",
  "conv1dLinear", "copyInto", "cosineWithWarmupLambda", "countLoraParameters", "type CreateOptions", "crossEntropy",
  "type CrossEntropyOptions", "cudaAvailable", "DataLoader", "type DataLoaderOptions", "type DataProblem",
  "type DataRecord", "type DecodeOptions", "DEFAULT_ADAPTER_NAME", "DEFAULT_TARGET_MODULES", "defaultDevice",
  "defaultGenerator", "DEMO_TEMPLATE", "type DemoOptions", "type DemoResult", "type Device", "type DeviceLike",
  "type DeviceMemory", "type DeviceSpec", "div", "DoraMagnitude", "Dropout", "dropout", "type DropoutOptions",
  "type DType", "DTYPE_SIZE", "DTYPES", "Embedding", "embedding", "empty", "emptyLike", "type EncodeOptions",
  "END_OF_TEXT", "estimateLora", "type EvalEvent", "exp", "expand", "f16BitsToF32", "f32ToBf16Bits", "f32ToF16Bits",
  "type FileData", "FINE_TUNE_DEFAULTS", "fineTune", "FineTuneOptionError", "type FineTuneOptions", "type FineTuneResult",
  "type FineTuneStart", "type FlatOptimizerState", "formatPrompt", "formatShape", "fromTensor", "full", "fullLike",
  "gelu", "generate", "type GenerateOptions", "generateText", "type GenerationModel", "type GenerationSpec", "Generator",
  "type GeneratorState", "getConstantScheduleWithWarmup", "getCosineScheduleWithWarmup", "getLinearScheduleWithWarmup",
  "getPeftModel", "getScheduler", "GPT2Attention", "GPT2Block", "GPT2Config", "type GPT2ConfigInit", "GPT2LMHeadModel",
  "GPT2MLP", "GPT2Model", "GPT2Tokenizer", "gradNorm", "type HostBatch", "IGNORE_INDEX", "info", "type InitLoraWeights",
  "isGradEnabled", "kaimingUniform", "keep", "KVCache", "LambdaLR", "latestCheckpoint", "type LaunchOptions", "launchRanks", "type LaunchResult", "type LayerCache", "LayerNorm",
  "layerNorm", "type LayerOptions", "linalg", "Linear", "linear", "linearCrossEntropy", "type LinearCrossEntropyOptions", "LinearWithLoRA", "linearWithWarmupLambda", "lineChart",
  "type LineChartOptions", "listCheckpoints", "LLAMA_MODEL_TYPES", "LlamaAttention", "LlamaConfig",
  "type LlamaConfigInit", "LlamaDecoderLayer", "LlamaForCausalLM", "type LlamaInput", "LlamaMLP", "LlamaModel",
  "type LlamaModelType", "type LoadAdapterOptions", "type LoadDataOptions", "type LoadedBaseModel", "type LoadedCheckpoint", "type LoadedData",
  "type LoaderState", "loadInstructionData", "type LoadOptions", "type LoadStateDictResult", "log", "logSoftmax",
  "type LoraBias", "LoraConfig", "type LoraConfigInit", "loraDelta", "type LoraDeltaOptions", "LoraEmbedding",
  "type LoraEstimate", "LoRALayer", "type LoraLayer", "type LoRALayerOptions", "LoraLinear", "loraMerge", "LoraModel",
  "type LoraParameterCount", "type LoraTensorName", "LOWRANK_PEFT_VERSION", "type LrLambda", "type LRSchedulerState",
  "manualSeed", "matmul", "mean", "memory", "mergeLoraWeights", "MetricsLog", "MODEL_TEMPLATE_FILE", "Module",
  "type ModuleInfo", "type ModuleKind", "ModuleList", "type ModuleShape", "ModulesToSaveWrapper", "mul",
  "NativeAddonError", "ncclAvailable", "NcclComm", "ncclUniqueId", "neg", "type NestedArray", "noGrad", "NonFiniteLossError", "ones", "onesLike", "Optimizer",
  "type OptimizerStateDict", "padBatch", "type ParamGroup", "type ParamGroupInput", "type Params", "type ParamState",
  "parseDevice", "parseSafetensors", "PEFT_FORMAT_VERSION", "PeftModel", "type PeftOptions", "type Point", "pow",
  "type PretrainedDecodeOptions", "type PretrainedEncodeOptions", "PreTrainedTokenizer", "type PretrainedTokenizerFiles", "type ProgressOptions", "type PromptCompletionRecord", "type PromptTemplate", "rand", "randn", "type RandomOptions", "rankFromEnv", "readChatTemplateFile", "readCheckpoint", "readJsonl",
  "type ReadResult", "readSafetensors", "readSafetensorsAsync", "readShardedSafetensors", "readShardedSafetensorsAsync", "readTemplateFile", "relu", "type RenderChatOptions", "renderChatTemplate", "renderPng", "renderSvg",
  "type ResolvedTemplate", "resolveResume", "resolveTemplate", "type Rgb", "RMSNorm", "rmsNorm", "rotaryCosSin",
  "type RotaryOptions", "runDemo", "RunLockedError", "SAFETENSORS_INDEX_FILE", "type SafetensorsDType",
  "type SafetensorsEntry", "SafetensorsFile", "type SafetensorsInput", "type SafetensorsTensor", "sampleToken",
  "type SavableDType", "type SaveAdapterOptions", "scale", "scaledDotProductAttention", "type SchedulableOptimizer", "type ScheduleName",
  "type SchedulerName", "SeededRandom", "serializeSafetensors", "type Series", "setNumThreads", "SGD", "type SGDOptions",
  "type SGDState", "shapeSize", "shardBatch", "shuffledIndices", "sigmoid", "silu", "SingleProcessComm", "softmax", "split", "type SplitOptions",
  "splitTrainEval", "sqrt", "square", "stack", "type StateDict", "type StateSpec", "type StepRecord", "type StopReason", "streamText", "sub", "sum",
  "synchronize", "tanh", "TASK_TYPES", "type TaskType", "type TemplateSource", "type TemplateSpec", "Tensor", "tensor",
  "type TextGenerationResult", "type TextRecord", "TextStreamer", "type TextTokenizer", "tidy", "type TokenDecoder", "type TokenizedExample", "type TokenizeOptions", "tokenizeRecords", "type TokenizeResult",
  "type TokenizerLike", "type TokenizerSpec", "toTensor", "type ToTensorOptions", "toTensors", "type TrainableModel",
  "type TrainBatchInput", "Trainer", "TRAINER_DEFAULTS", "type TrainerEvents", "type TrainerOptions", "type TrainerState",
  "type TrainResult", "UnsafeMergeError", "type WarningHandler", "type WeightedAdapterOptions", "writeChart",
  "writeCheckpoint", "writeFileAtomic", "writeFileAtomicAsync", "writeJsonAtomic", "writeJsonAtomicAsync",
  "writeLossChart", "writeSafetensors", "writeSafetensorsAsync", "zeros", "zerosLike",
];

/** Case-insensitive order, "type " ignored, so a name sits where a reader looks for it. */
const order = (n: string) => {
  const bare = n.replace(/^type /, "");
  return `${bare.toLowerCase()}\0${bare}`;
};
const sorted = (names: readonly string[]) => [...names].sort((a, b) => (order(a) < order(b) ? -1 : 1));

describe("the root module", () => {
  it("exports exactly the listed names, values and types", () => {
    const index = resolve(import.meta.dirname, "../../lib/index.ts");
    const program = ts.createProgram([index], { module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022, strict: true, noEmit: true });
    const checker = program.getTypeChecker();
    const names = checker.getExportsOfModule(checker.getSymbolAtLocation(program.getSourceFile(index)!)!).map((s) => {
      const target = s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s;
      return (target.flags & ts.SymbolFlags.Value ? "" : "type ") + s.name;
    });
    expect(sorted(names)).toEqual(EXPORTS);
  });

  it("has a runtime value for every listed value and for nothing else", () => {
    expect(sorted(Object.keys(root))).toEqual(EXPORTS.filter((n) => !n.startsWith("type ")));
  });
});
