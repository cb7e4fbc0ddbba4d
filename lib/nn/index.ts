export { Module, ModuleList, type StateDict, type LoadStateDictResult } from "./module.js";
export { Linear, Conv1D, Embedding, LayerNorm, RMSNorm, Dropout, type LayerOptions } from "./layers.js";
