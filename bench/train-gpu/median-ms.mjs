// The probes' timer: fn run 5 times to warm up, then n times, each timed to the device's end
// (synchronize); the median in milliseconds.
import { synchronize } from "../../dist-train-cpu/lib/index.js";

export function medianMs(fn, device, n = 30) {
  for (let i = 0; i < 5; i++) fn();
  synchronize(device);
  const t = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    fn();
    synchronize(device);
    t.push(performance.now() - t0);
  }
  return t.sort((a, b) => a - b)[n >> 1];
}
