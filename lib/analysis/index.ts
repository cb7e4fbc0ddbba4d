// The numbers behind `lowrank params`, `lowrank svd` and `lowrank sweep`, usable from code.
export { parameterTable, type ParamsRow, type ParamsTableOptions } from "./params.js";
export { GPT2_PRESETS, GPT2_PRESET_NAMES, gpt2PresetConfig, gpt2ModuleShapes, gpt2ParameterCount, type GPT2Preset } from "../models/gpt2/shapes.js";
export { adapterSpectra, checkpointDeltaSpectra, spectrumStats, type LayerSpectrum, type SpectrumStats } from "./spectrum.js";
export { readAdapterFactors, readCheckpointWeights, type AdapterFactors } from "./weights.js";
export { writeSpectrumCharts } from "./charts.js";
export { runSweep, usedRanks, rankDir, summarizeRun, writeSweepCharts, type RunSummary, type RankResult, type SweepOptions, type SweepResult } from "./sweep.js";
