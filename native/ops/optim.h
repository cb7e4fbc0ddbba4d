// Fused optimizer kernels: AdamW and SGD steps over every trainable tensor in one native call
// (one CUDA launch), and the multi-tensor norm and scale that gradient clipping needs.
// The per-element update is written once below and shared by both twins, so the CPU and CUDA
// backends round identically. The TypeScript side lives in lib/optim/.
#pragma once
#include <cmath>
#include <vector>

#include "../backend.h"
#include "../core/nanmath.h"

namespace lowrank {

// One tensor of a fused AdamW step. The scalars are PyTorch's Python-side double expressions
// rounded to float32 once, as torch passes them to its float32 kernels (see binding/optim.cc).
// Each tensor carries its own, because params of different groups have different lr/weight
// decay and each param keeps its own step count.
struct AdamWTensor {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  int64_t n;
  float decay;            // 1 - lr*wd (decoupled weight decay)
  float lerp_weight;      // 1 - beta1: exp_avg.lerp_(grad, 1 - beta1)
  float beta2;
  float one_minus_beta2;
  float bc2_sqrt;         // sqrt(1 - beta2^t)
  float eps;
  float neg_step_size;    // -lr / (1 - beta1^t)
};

// One tensor of a fused SGD step (torch.optim.SGD). momentum_buffer is null when momentum == 0.
struct SGDTensor {
  float* param;
  const float* grad;
  float* momentum_buffer;
  int64_t n;
  float weight_decay;
  float momentum;
  float one_minus_dampening;
  float neg_lr;
  int32_t nesterov;
  int32_t first_step;  // torch sets buf = grad (a clone) the first time instead of updating it
};

// A contiguous float32 range (a gradient to measure or scale).
struct FloatSpan {
  float* data;
  int64_t n;
};

// The fused kernels walk a list of fixed-size chunks over the concatenated tensors: one CPU
// task or one CUDA block per chunk, and (for the norm) one partial sum per chunk, combined in
// chunk order so the result does not depend on the thread count.
constexpr int64_t kOptimChunk = 4096;

struct OptimChunk {
  int32_t tensor;
  int64_t begin, end;  // element range inside that tensor
};

// Splits tensors[0..count) (anything with an `n` member) into chunks of at most kOptimChunk.
template <typename T>
std::vector<OptimChunk> optim_chunks(const T* tensors, int count) {
  std::vector<OptimChunk> chunks;
  for (int t = 0; t < count; ++t)
    for (int64_t b = 0; b < tensors[t].n; b += kOptimChunk)
      chunks.push_back({t, b, b + kOptimChunk < tensors[t].n ? b + kOptimChunk : tensors[t].n});
  return chunks;
}

// The norm's per-element term |x|^p in double (the inf-norm takes |x|, combined with nan_max).
LR_HD double norm_term(float x, double p, bool inf) {
  const double a = fabs(static_cast<double>(x));
  return inf || p == 1 ? a : p == 2 ? a * a : pow(a, p);
}

// Folds per-chunk partials into out[tensor] in chunk order (max for the inf-norm, else a sum).
inline void combine_chunk_partials(const std::vector<OptimChunk>& chunks, const double* partial, bool inf, double* out) {
  for (size_t c = 0; c < chunks.size(); ++c) {
    double& o = out[chunks[c].tensor];
    o = inf ? nan_max(o, partial[c]) : o + partial[c];
  }
}

// Float ops that stay separately rounded on both backends: nvcc would otherwise contract
// a*b + c into an FMA (the CPU build targets baseline x86-64 and has no FMA), and the twins
// would drift apart by an ulp.
LR_HD float rn_mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
LR_HD float rn_add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// Element i of torch's _single_tensor_adam with decoupled weight decay (AdamW), in its order:
//   param.mul_(1 - lr*wd)
//   exp_avg.lerp_(grad, 1 - beta1)        (lerp: a + w*(b - a) when w < 0.5, else b - (b - a)*(1 - w))
//   exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)   (addcmul: a + (value*x)*y)
//   denom = (exp_avg_sq.sqrt() / sqrt(bc2)).add_(eps)
//   param.addcdiv_(exp_avg, denom, value=-step_size)             (addcdiv: a + (value*x)/y)
LR_HD void adamw_element(const AdamWTensor& t, int64_t i) {
  const float g = t.grad[i];
  const float p = rn_mul(t.param[i], t.decay);
  const float m0 = t.exp_avg[i];
  const float w = t.lerp_weight;
  const float m = w < 0.5f ? rn_add(m0, rn_mul(w, g - m0)) : g - rn_mul(g - m0, 1.0f - w);
  const float v = rn_add(rn_mul(t.exp_avg_sq[i], t.beta2), rn_mul(rn_mul(t.one_minus_beta2, g), g));
  const float denom = sqrtf(v) / t.bc2_sqrt + t.eps;
  t.exp_avg[i] = m;
  t.exp_avg_sq[i] = v;
  t.param[i] = rn_add(p, rn_mul(t.neg_step_size, m) / denom);
}

// Element i of torch's _single_tensor_sgd:
//   grad = grad.add(param, alpha=wd)                     (a new tensor: p.grad is not changed)
//   buf = grad.clone() on the first step, else buf.mul_(momentum).add_(grad, alpha=1 - dampening)
//   grad = grad.add(buf, alpha=momentum) if nesterov else buf
//   param.add_(grad, alpha=-lr)
LR_HD void sgd_element(const SGDTensor& t, int64_t i) {
  const float p = t.param[i];
  float g = t.grad[i];
  if (t.weight_decay != 0.0f) g = rn_add(g, rn_mul(t.weight_decay, p));
  if (t.momentum_buffer) {
    const float buf = t.first_step ? g : rn_add(rn_mul(t.momentum_buffer[i], t.momentum), rn_mul(t.one_minus_dampening, g));
    t.momentum_buffer[i] = buf;
    g = t.nesterov ? rn_add(g, rn_mul(t.momentum, buf)) : buf;
  }
  t.param[i] = rn_add(p, rn_mul(t.neg_lr, g));
}

}  // namespace lowrank

#define LOWRANK_OPTIM_OPS                                                                          \
  /* One AdamW step over all `count` tensors (one CUDA launch); the table is host memory. */     \
  void adamw_step_f32(const AdamWTensor* tensors, int count);                                     \
  /* One SGD step over all `count` tensors (one CUDA launch); the table is host memory. */       \
  void sgd_step_f32(const SGDTensor* tensors, int count);                                         \
  /* out[k] = sum of |x|^p over span k (p == inf: max |x|; NaN propagates), accumulated in       \
     double. `out` is host memory on both backends, so the CUDA twin waits for the result. */     \
  void sum_pow_f32(const FloatSpan* spans, int count, double p, double* out);                     \
  /* x *= alpha over every span (one CUDA launch). */                                             \
  void scale_spans_f32(const FloatSpan* spans, int count, float alpha);

LOWRANK_DECLARE_BACKEND(LOWRANK_OPTIM_OPS)
