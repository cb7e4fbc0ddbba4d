// test/models/bf16-weights.test.ts's checks on CUDA: bf16 weights through the tensor-core GEMMs
// against the same model in float32 on the GPU.
import { hasCuda, noCudaReason } from "../helpers.js";
import { describeBf16Weights } from "../models/bf16-weights.test.js";

describeBf16Weights("cuda:0", hasCuda ? undefined : noCudaReason);
