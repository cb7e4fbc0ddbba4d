// Fused cross-entropy on the CPU: logsumexp per row without materializing the probabilities.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../core/dtype.h"
#include "../ops/crossentropy.h"
#include "bf16_load.h"
#include "parallel.h"
#include "rows.h"

namespace lowrank {
namespace cpu {


void cross_entropy_f32(const float* logits, const int32_t* targets, float* lse, float* loss, float* total, int64_t N,
                       int64_t V, int32_t ignore_index, Reduction reduction, int64_t* invalid) {
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] != ignore_index && (targets[n] < 0 || targets[n] >= V)) {
      invalid[0] = n;
      invalid[1] = targets[n];
      return;
    }
  }
  parallel_for(N, row_grain(V), [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      if (targets[n] == ignore_index) {
        lse[n] = loss[n] = 0.0f;
        continue;
      }
      const float* xr = logits + n * V;
      const float m = row_max(xr, V);
      lse[n] = m + std::log(row_exp_sum(xr, V, m, 1.0f, nullptr));
      loss[n] = lse[n] - xr[targets[n]];
    }
  });
  if (reduction == Reduction::None) return;
  double sum = 0;  // rows in order: deterministic
  int64_t count = 0;
  for (int64_t n = 0; n < N; ++n) {
    sum += loss[n];
    count += targets[n] != ignore_index;
  }
  // Mean over counted rows; 0/0 = NaN when all are ignored, like PyTorch.
  total[0] = reduction == Reduction::Sum ? float(sum) : count ? float(sum / double(count)) : std::numeric_limits<float>::quiet_NaN();
}

void cross_entropy_backward_f32(const float* logits, const int32_t* targets, const float* lse, const float* dout,
                                float* dlogits, int64_t N, int64_t V, int32_t ignore_index, Reduction reduction) {
  float g_all = 0;
  if (reduction != Reduction::None) {
    int64_t count = 0;
    for (int64_t n = 0; n < N; ++n) count += targets[n] != ignore_index;
    // With no counted row every row is ignored and gets 0 below; g_all is then unused.
    g_all = reduction == Reduction::Sum ? dout[0] : count ? dout[0] / float(count) : 0.0f;
  }
  parallel_for(N, row_grain(V), [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      float* dr = dlogits + n * V;
      const int32_t t = targets[n];
      if (t == ignore_index) {
        // PyTorch's gradient of an ignored row is 0 - softmax·0: 0, or NaN where its softmax is NaN
        // (a NaN or +inf logit, or none finite), so NaN logits are not hidden by being ignored.
        const float m = row_max(logits + n * V, V);
        std::fill(dr, dr + V, std::isfinite(m) ? 0.0f : std::numeric_limits<float>::quiet_NaN());
        continue;
      }
      const float g = reduction == Reduction::None ? dout[n] : g_all;
      // g · softmax: exp(x - lse) sums to 1 only within the rounding of lse (~ulp(lse), 4e-6 of each
      // value at lse ~ 50); scaling by the actual sum makes the row sum exact as softmax's own division
      // does, so a part common to every row of the weight behind the logits cancels in the gradient.
      const float sum = row_exp_sum(logits + n * V, V, lse[n], 1.0f, dr);
      const float scale = g / sum;
      for (int64_t j = 0; j < V; ++j) dr[j] *= scale;
      dr[t] -= g;
    }
  });
}

void cross_entropy_rows_f32(const float* logits, const int32_t* targets, float* loss, float* counted, void* grad,
                            bool grad_bf16, int64_t N, int64_t V, int64_t ld, int32_t ignore_index, int32_t* first_bad) {
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] != ignore_index && (targets[n] < 0 || targets[n] >= V)) {
      *first_bad = std::min(*first_bad, static_cast<int32_t>(n));
      break;
    }
  }
  // Per row, passes over the logits (a GPT-2 row, 201 KB, stays in L2 after the first): the max;
  // exp(x - max) summed and kept in float32 (in the gradient itself, or a row buffer when the
  // gradient is bf16); softmax = that · 1/sum; the bf16 rounding. One exp per logit: computing
  // exp(x - lse) again for the softmax cost a second (crossEntropyRows at 256 x 50257 with a bf16
  // gradient, 2 threads: 6.6 ms -> 3.3 with this, the vectorized max and the bf16 rounding).
  parallel_for(N, row_grain(V), [&](int64_t r0, int64_t r1) {
    std::vector<float> row(grad && grad_bf16 ? V : 0);
    for (int64_t n = r0; n < r1; ++n) {
      const float* xr = logits + n * ld;
      const int32_t t = targets[n];
      const bool ignored = t == ignore_index, bad = !ignored && (t < 0 || t >= V);
      const float m = row_max(xr, V);
      float* gr = !grad ? nullptr : grad_bf16 ? row.data() : static_cast<float*>(grad) + n * ld;
      loss[n] = counted[n] = 0.0f;
      float inv_sum = 1.0f;
      if (ignored || bad) {
        if (gr) std::fill(gr, gr + V, std::isfinite(m) || bad ? 0.0f : std::numeric_limits<float>::quiet_NaN());
      } else {
        const float target_logit = xr[t];  // read first: a float32 gradient overwrites the logits
        const float sum = row_exp_sum(xr, V, m, 1.0f, gr);  // gr = exp(x - m) when asked
        loss[n] = m + std::log(sum) - target_logit;
        counted[n] = 1.0f;
        inv_sum = 1.0f / sum;
      }
      if (!gr) continue;
      if (!ignored && !bad) {  // softmax - onehot(t)
        for (int64_t j = 0; j < V; ++j) gr[j] *= inv_sum;
        gr[t] -= 1.0f;
      }
      if (grad_bf16) round_to_bf16(gr, static_cast<uint16_t*>(grad) + n * ld, V);
    }
  });
}

}  // namespace cpu
}  // namespace lowrank
