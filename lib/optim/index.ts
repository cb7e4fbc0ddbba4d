// Optimizers (fused native steps), gradient clipping and lr schedules.
export { AdamW, type AdamWOptions, type AdamWState } from "./adamw.js";
export { SGD, type SGDOptions, type SGDState } from "./sgd.js";
export {
  Optimizer, fromStateTensors, type BaseOptions, type FlatOptimizerState, type OptimizerStateDict, type ParamGroup,
  type ParamGroupInput, type Params, type ParamState, type StateSpec,
} from "./optimizer.js";
export { clipGradNorm, gradNorm, type ClipGradNormOptions } from "./clip.js";
export {
  LambdaLR, constantWithWarmupLambda, linearWithWarmupLambda, cosineWithWarmupLambda, getConstantScheduleWithWarmup,
  getLinearScheduleWithWarmup, getCosineScheduleWithWarmup, getScheduler, type LrLambda, type LRSchedulerState,
  type SchedulableOptimizer, type SchedulerName,
} from "./schedule.js";
