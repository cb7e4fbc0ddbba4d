// Rewrites a CUDA source (dev/cuda/lora.cu, or one of the addon's native/cuda files) into plain C++
// for the CPU emulator: the CUDA headers become emu.h (and emu_cublas.h), native/cuda/common.cuh
// becomes emu_common.h, the other quoted includes point at their files wherever the output goes, and each
// launch `kernel<...><<<grid, block...>>>(args);` becomes
// `emu_launch(emu_dims(grid, block...), [=]() { kernel<...>(args); });`.
// Usage: node transform.mjs in.cu out.cc
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

const [src, dst] = process.argv.slice(2);
if (!src || !dst) throw new Error("usage: node transform.mjs in.cu out.cc");
const here = dirname(resolve(src));
let s = readFileSync(src, "utf8")
  .replace("#include <cuda_bf16.h>\n", '#include "emu.h"\n')
  .replace("#include <cuda_runtime.h>\n", "")
  .replace("#include <cublas_v2.h>\n", '#include "emu_cublas.h"\n')
  .replace('#include "common.cuh"\n', '#include "emu_common.h"\n')
  .replace(/#include "(?!emu)([^"]+)"/g, (_, rel) => `#include "${join(here, rel)}"`);
let launches = 0;
s = s.replace(/(\w+(?:<[^;<>]*>)?)<<<([\s\S]*?)>>>\(([\s\S]*?)\);/g, (_, kernel, config, args) => {
  launches++;
  return `emu_launch(emu_dims(${config}), [=]() { ${kernel}(${args}); });`;
});
if (launches === 0 || s.includes("<<<")) throw new Error(`transform.mjs: a kernel launch in ${src} was not rewritten`);
writeFileSync(dst, s);
