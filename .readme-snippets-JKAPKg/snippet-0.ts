import { tensor, randn, tidy, memory, Generator, mul, sum } from "/work/main/lib/index.ts";

const x = randn([4, 8], { generator: new Generator(42) });   // float32 on the CPU
const y = tidy(() => x.transpose(0, 1).contiguous().to("cpu", "bfloat16")); // intermediates freed
console.log(y.shape, y.dtype, memory().cpu);                  // exact live bytes, buffers, tensors
const w = tensor([1, 2, 3, 4, 5, 6, 7, 8], { requiresGrad: true });
tidy(() => sum(mul(x, w)).backward());                        // autograd: w.grad now holds d/dw
x.dispose(); y.dispose(); w.dispose();
