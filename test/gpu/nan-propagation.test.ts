// The NaN-propagation table of test/ops/nan-propagation.test.ts, run on CUDA: the same inputs, the
// same expected NaN patterns (PyTorch's), through the CUDA kernels (forward and backward).
import { hasCuda, noCudaReason } from "../helpers.js";
import { describeNanPropagation } from "../ops/nan-propagation.test.js";

describeNanPropagation("cuda:0", hasCuda ? undefined : noCudaReason);
