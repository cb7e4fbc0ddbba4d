import { native } from "../native/index.js";

/** "cpu", "cuda" (= "cuda:0") or "cuda:N". */
export type DeviceSpec = "cpu" | "cuda" | `cuda:${number}`;

export interface Device {
  readonly type: "cpu" | "cuda";
  readonly index: number;
  /** Canonical name: "cpu" or "cuda:N". */
  readonly name: string;
}

const CPU: Device = { type: "cpu", index: 0, name: "cpu" };

/** Parses a device name and checks that it exists in this build and on this host. */
export function parseDevice(spec: string, op = "device"): Device {
  if (spec === "cpu") return CPU;
  const m = /^cuda(?::(\d+))?$/.exec(spec);
  if (!m) throw new Error(`${op}: unknown device "${spec}"; use "cpu", "cuda" or "cuda:N"`);
  const index = m[1] === undefined ? 0 : Number(m[1]);
  const info = native().info();
  if (!info.cudaBuilt) {
    throw new Error(
      `${op}: device "${spec}" needs the CUDA backend, but this build of lowrank is CPU-only ` +
        `(rebuild on a host with nvcc and cuBLAS, or LOWRANK_CUDA=1 npm run build:native to see why it was skipped)`,
    );
  }
  if (index >= info.gpus.length) {
    throw new Error(`${op}: device "${spec}" does not exist; this host has ${info.gpus.length} CUDA device(s)`);
  }
  return { type: "cuda", index, name: `cuda:${index}` };
}

/** True when this build has CUDA and a GPU is present. */
export function cudaAvailable(): boolean {
  const info = native().info();
  return info.cudaBuilt && info.gpus.length > 0;
}

/** The device lowrank picks when none is given: LOWRANK_DEVICE, else "cpu". */
export function defaultDevice(): DeviceSpec {
  return (process.env.LOWRANK_DEVICE as DeviceSpec | undefined) ?? "cpu";
}
