"""Rewrites dev/cuda/lora.cu into plain C++ for the CPU emulator: the CUDA headers become emu.h
(and emu_cublas.h), and each launch `kernel<...><<<grid, block>>>(args);` becomes
`emu_launch(emu_dims(grid, block), [=]() { kernel<...>(args); });`.
Usage: transform.py lora.cu out.cc"""
import re
import sys

src, dst = sys.argv[1], sys.argv[2]
s = open(src).read()
s = s.replace("#include <cuda_bf16.h>\n", '#include "emu.h"\n').replace("#include <cuda_runtime.h>\n", "")
s = s.replace("#include <cublas_v2.h>\n", '#include "emu_cublas.h"\n')
s = s.replace('#include "../../native/core/philox.h"', '#include "../../../native/core/philox.h"')
launch = re.compile(r"(\w+(?:<[^;<>]*>)?)<<<(.*?)>>>\((.*?)\);", re.S)
s, n = launch.subn(lambda m: f"emu_launch(emu_dims({m.group(2)}), [=]() {{ {m.group(1)}({m.group(3)}); }});", s)
if n == 0 or "<<<" in s:
    sys.exit("transform.py: a kernel launch was not rewritten")
open(dst, "w").write(s)
