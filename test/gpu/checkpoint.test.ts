// test/autograd/checkpoint.test.ts's model checks on CUDA: gradient checkpointing gives the same
// losses and adapters bit for bit there too (the replayed dropout draws are device-independent).
import { hasCuda, noCudaReason } from "../helpers.js";
import { describeModelCheckpointing } from "../autograd/checkpoint.test.js";

describeModelCheckpointing("cuda:0", hasCuda ? undefined : noCudaReason);
