// Element-wise kernels on the GPU; each is checked against its CPU twin (native/cpu/elementwise.cc).
#include "../ops/elementwise.h"
#include "common.cuh"

namespace lowrank {
namespace cuda {
namespace {
constexpr int kThreads = 256;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluC = 0.044715f;

struct BinaryArgs {
  int64_t shape[kMaxDims];
  int64_t a_strides[kMaxDims];
  int64_t b_strides[kMaxDims];
  int ndim;
};

__device__ __forceinline__ float apply(BinaryOp op, float x, float y) {
  switch (op) {
    case BinaryOp::Add: return x + y;
    case BinaryOp::Sub: return x - y;
    case BinaryOp::Mul: return x * y;
    case BinaryOp::Div: return x / y;
  }
  return 0;
}

__global__ void binary_kernel(BinaryOp op, const float* a, const float* b, float* out, int64_t n, BinaryArgs s) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
    int64_t rem = i, ao = 0, bo = 0;
    for (int d = s.ndim - 1; d >= 0; --d) {
      int64_t idx = rem % s.shape[d];
      ao += idx * s.a_strides[d];
      bo += idx * s.b_strides[d];
      rem /= s.shape[d];
    }
    out[i] = apply(op, a[ao], b[bo]);
  }
}

__device__ __forceinline__ float unary(UnaryOp op, float v, float alpha) {
  switch (op) {
    case UnaryOp::Neg: return -v;
    case UnaryOp::Exp: return expf(v);
    case UnaryOp::Log: return logf(v);
    case UnaryOp::Sqrt: return sqrtf(v);
    case UnaryOp::Tanh: return tanhf(v);
    case UnaryOp::Relu: return v <= 0 ? 0.0f : v;  // NaN stays NaN
    case UnaryOp::Sigmoid: return 1.0f / (1.0f + expf(-v));
    case UnaryOp::Square: return v * v;
    case UnaryOp::Scale: return alpha * v;
    case UnaryOp::AddScalar: return v + alpha;
    case UnaryOp::PowScalar: return powf(v, alpha);
    case UnaryOp::Gelu: return 0.5f * v * (1.0f + tanhf(kSqrt2OverPi * (v + kGeluC * v * v * v)));
    case UnaryOp::Abs: return fabsf(v);
  }
  return 0;
}

__device__ __forceinline__ float unary_grad(UnaryOp op, float v, float g, float alpha) {
  switch (op) {
    case UnaryOp::Neg: return -g;
    case UnaryOp::Exp: return g * expf(v);
    case UnaryOp::Log: return g / v;
    case UnaryOp::Sqrt: return g * 0.5f / sqrtf(v);
    case UnaryOp::Tanh: { float t = tanhf(v); return g * (1.0f - t * t); }
    case UnaryOp::Relu: return v <= 0 ? 0.0f : g;  // PyTorch's threshold_backward (x = NaN passes g)
    case UnaryOp::Sigmoid: { float s = 1.0f / (1.0f + expf(-v)); return g * s * (1.0f - s); }
    case UnaryOp::Square: return g * 2.0f * v;
    case UnaryOp::Scale: return g * alpha;
    case UnaryOp::AddScalar: return g;
    case UnaryOp::PowScalar: return g * alpha * powf(v, alpha - 1.0f);
    case UnaryOp::Gelu: {
      float t = tanhf(kSqrt2OverPi * (v + kGeluC * v * v * v));
      float dinner = kSqrt2OverPi * (1.0f + 3.0f * kGeluC * v * v);
      return g * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * dinner);
    }
    case UnaryOp::Abs: return g * (v > 0 ? 1.0f : v < 0 ? -1.0f : 0.0f);  // g·sgn(x): a NaN g stays NaN
  }
  return 0;
}

__global__ void unary_kernel(UnaryOp op, const float* x, float* out, int64_t n, float alpha) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x)
    out[i] = unary(op, x[i], alpha);
}

__global__ void unary_backward_kernel(UnaryOp op, const float* x, const float* g, float* gx, int64_t n, float alpha) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x)
    gx[i] = unary_grad(op, x[i], g[i], alpha);
}

// One block per row; double accumulation like the CPU twin.
__global__ void sum_rows_kernel(const float* x, float* out, int64_t cols) {
  __shared__ double partial[kThreads];
  const float* row = x + blockIdx.x * cols;
  double acc = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) acc += row[j];
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = static_cast<float>(partial[0]);
}
}  // namespace

void binary_f32(BinaryOp op, const float* a, const int64_t* as, const float* b, const int64_t* bs, float* out, int ndim,
                const int64_t* shape) {
  BinaryArgs s{};
  s.ndim = ndim;
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) {
    s.shape[d] = shape[d];
    s.a_strides[d] = as[d];
    s.b_strides[d] = bs[d];
    n *= shape[d];
  }
  if (n == 0) return;
  binary_kernel<<<grid_for(n, kThreads), kThreads, 0, current_stream()>>>(op, a, b, out, n, s);
  LR_CUDA_LAUNCH_CHECK("binary_f32");
}

void unary_f32(UnaryOp op, const float* x, float* out, int64_t n, float alpha) {
  if (n == 0) return;
  unary_kernel<<<grid_for(n, kThreads), kThreads, 0, current_stream()>>>(op, x, out, n, alpha);
  LR_CUDA_LAUNCH_CHECK("unary_f32");
}

void unary_backward_f32(UnaryOp op, const float* x, const float* g, float* gx, int64_t n, float alpha) {
  if (n == 0) return;
  unary_backward_kernel<<<grid_for(n, kThreads), kThreads, 0, current_stream()>>>(op, x, g, gx, n, alpha);
  LR_CUDA_LAUNCH_CHECK("unary_backward_f32");
}

void sum_rows_f32(const float* x, float* out, int64_t rows, int64_t cols) {
  if (rows == 0) return;
  sum_rows_kernel<<<static_cast<unsigned>(rows), kThreads, 0, current_stream()>>>(x, out, cols);
  LR_CUDA_LAUNCH_CHECK("sum_rows_f32");
}

}  // namespace cuda
}  // namespace lowrank
