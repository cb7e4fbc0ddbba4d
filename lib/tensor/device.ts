// Devices, parsed once: each name ("cpu", "cuda", "cuda:N") maps to one cached, frozen Device,
// and the host's CUDA properties are read from the addon once. Tensor creation parses its device
// option on every call, so a parse is a map look-up, with no regex and no native call.
import { native } from "../native/index.js";

/** "cpu", "cuda" (= "cuda:0") or "cuda:N". */
export type DeviceSpec = "cpu" | "cuda" | `cuda:${number}`;

export interface Device {
  readonly type: "cpu" | "cuda";
  readonly index: number;
  /** Canonical name: "cpu" or "cuda:N". */
  readonly name: string;
}

/** What every `device` option accepts: a Device (from parseDevice or tensor.deviceInfo) or its name. */
export type DeviceLike = Device | DeviceSpec | string;

const CPU: Device = Object.freeze({ type: "cpu", index: 0, name: "cpu" });

/** Devices by every name parsed so far ("cuda" and "cuda:0" share one object). */
const parsed = new Map<string, Device>([["cpu", CPU]]);

interface CudaHost {
  readonly built: boolean;
  readonly gpus: readonly string[];
}
let cudaHost: CudaHost | undefined;

/** Whether this build has CUDA and the host's GPUs: fixed for the process, so read once. */
function cuda(): CudaHost {
  if (!cudaHost) {
    const info = native().info();
    cudaHost = { built: info.cudaBuilt, gpus: [...info.gpus] };
  }
  return cudaHost;
}

/** The addon's description of a CUDA device ("<name> (sm_XY, <total> MiB)"), from the cached host info. */
export function cudaDescription(d: Device): string | undefined {
  return d.type === "cuda" ? cuda().gpus[d.index] : undefined;
}

/** Parses a device name (or returns a Device as is) and checks that it exists in this build and on this host. */
export function parseDevice(spec: DeviceLike, op = "device"): Device {
  const name = typeof spec === "string" ? spec : spec.name;
  const known = parsed.get(name);
  if (known) return known;
  const m = /^cuda(?::(\d+))?$/.exec(name);
  if (!m) throw new Error(`${op}: unknown device "${name}"; use "cpu", "cuda" or "cuda:N"`);
  const index = m[1] === undefined ? 0 : Number(m[1]);
  const host = cuda();
  if (!host.built) {
    throw new Error(
      `${op}: device "${name}" needs the CUDA backend, but this build of lowrank is CPU-only ` +
        `(rebuild on a host with nvcc and cuBLAS, or LOWRANK_CUDA=1 npm run build:native to see why it was skipped)`,
    );
  }
  if (index >= host.gpus.length) {
    throw new Error(`${op}: device "${name}" does not exist; this host has ${host.gpus.length} CUDA device(s)`);
  }
  const canonical = `cuda:${index}`;
  const device = parsed.get(canonical) ?? Object.freeze({ type: "cuda" as const, index, name: canonical });
  parsed.set(canonical, device);
  parsed.set(name, device);
  return device;
}

/** True when this build has CUDA and a GPU is present. */
export function cudaAvailable(): boolean {
  const host = cuda();
  return host.built && host.gpus.length > 0;
}

/** The device lowrank picks when none is given: LOWRANK_DEVICE, else "cpu". */
export function defaultDevice(): DeviceSpec {
  return (process.env.LOWRANK_DEVICE as DeviceSpec | undefined) ?? "cpu";
}
