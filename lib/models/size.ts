// The size check every model constructor runs before its first allocation.
import { checkFitsInMemory } from "../runtime.js";
import { defaultDevice, type DeviceLike } from "../tensor/device.js";

/** What a model config tells about its size (GPT2Config, LlamaConfig). */
export interface SizedConfig {
  readonly parameterCount: number;
  describeSize(): string;
}

/** Refuses float32 weights that cannot fit on the device at all, naming the config's size fields. */
export function checkWeightsFit(configName: string, config: SizedConfig, device: DeviceLike | undefined): void {
  checkFitsInMemory(
    4 * config.parameterCount, device ?? defaultDevice(),
    `${configName} (${config.describeSize()}): the model's weights (${config.parameterCount.toLocaleString("en-US")} float32 parameters)`,
    "check these fields of config.json",
  );
}
