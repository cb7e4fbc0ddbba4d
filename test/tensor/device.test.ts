// Devices are parsed once into cached objects: tensor creation does not re-parse its device nor
// ask the addon for the host's GPUs (native().info(), cudaGetDeviceProperties per GPU on CUDA).
import { afterEach, describe, expect, it, vi } from "vitest";
import { cudaAvailable, Module, parseDevice, synchronize, tensor, tidy, zeros, zerosLike, type Tensor } from "../../lib/index.js";
import { native } from "../../lib/native/index.js";

afterEach(() => vi.restoreAllMocks());

describe("devices", () => {
  it("parses each name once into one frozen object", () => {
    const cpu = parseDevice("cpu");
    expect(cpu).toEqual({ type: "cpu", index: 0, name: "cpu" });
    expect(Object.isFrozen(cpu)).toBe(true);
    expect(parseDevice("cpu")).toBe(cpu);
    expect(parseDevice(cpu)).toBe(cpu);
    tidy(() => expect(zeros([2]).deviceInfo).toBe(cpu));
    if (cudaAvailable()) {
      const gpu = parseDevice("cuda");
      expect(gpu).toEqual({ type: "cuda", index: 0, name: "cuda:0" });
      expect(parseDevice("cuda:0")).toBe(gpu);
      expect(parseDevice(gpu)).toBe(gpu);
    }
  });

  it("creates tensors without asking the addon for the host's devices again", () => {
    const device = cudaAvailable() ? "cuda" : "cpu";
    parseDevice(device); // the first parse of a CUDA name reads the host's GPUs
    const info = vi.spyOn(native(), "info");
    tidy(() => {
      for (let i = 0; i < 5; i++) {
        const t = zeros([3], { device });
        zerosLike(t);
        t.to(device);
      }
    });
    // A CPU-only build rejects CUDA names from the cached host properties too.
    if (!cudaAvailable()) {
      for (let i = 0; i < 3; i++) expect(() => zeros([1], { device: "cuda:0" })).toThrow(/CPU-only|does not exist/);
    }
    expect(info).not.toHaveBeenCalled();
  });

  it("takes a Device object wherever a device name is accepted", () => {
    const cpu = parseDevice("cpu");
    tidy(() => {
      const t = tensor([1, 2, 3], { device: cpu });
      expect(t.device).toBe("cpu");
      expect(Array.from(t.to(cpu).dataSync())).toEqual([1, 2, 3]);
      class Holder extends Module {
        declare w: Tensor;
        constructor() {
          super();
          this.registerParameter("w", zeros([2]));
        }
      }
      const m = new Holder().to(cpu);
      expect(m.w.deviceInfo).toBe(cpu);
      m.dispose();
    });
    synchronize(cpu);
    synchronize(); // the first GPU, or nothing to wait for on a CPU-only host
    if (cudaAvailable()) {
      synchronize(parseDevice("cuda"));
      synchronize("cuda"); // a bare "cuda" is cuda:0 here too
    } else {
      expect(() => synchronize("cuda:0")).toThrow(/synchronize: device "cuda:0" needs the CUDA backend/);
    }
  });

  it("still names an unknown device in its error", () => {
    expect(() => parseDevice({ type: "cuda", index: 0, name: "tpu" })).toThrow(/unknown device "tpu"/);
  });
});
