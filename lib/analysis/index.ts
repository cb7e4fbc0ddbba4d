// The numbers behind `lowrank params`, `lowrank svd` and `lowrank sweep`, usable from code.
export { GPT2_PRESETS, GPT2_PRESET_NAMES, gpt2PresetConfig, gpt2ModuleShapes, gpt2ParameterCount, parameterTable, type ParamsRow, type ParamsTableOptions, type GPT2Preset } from "./params.js";
export { adapterSpectra, checkpointDeltaSpectra, spectrumStats, type LayerSpectrum, type SpectrumStats } from "./spectrum.js";
export { readAdapterFactors, readCheckpointWeights, type AdapterFactors } from "./weights.js";
export { writeSpectrumCharts } from "./charts.js";
export { runSweep, usedRanks, rankDir, summarizeRun, writeSweepCharts, type RunSummary, type RankResult, type SweepOptions, type SweepResult } from "./sweep.js";
