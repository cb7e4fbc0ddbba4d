// Element-wise kernels on the GPU; each is checked against its CPU twin (native/cpu/elementwise.cc).
#include "../ops/elementwise.h"
#include "common.cuh"
#include "strided.cuh"

namespace lowrank {
namespace cuda {
namespace {
constexpr int kThreads = 256;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluC = 0.044715f;
constexpr float kSqrtHalf = 0.7071067811865476f;   // the exact GELU's Φ(x) = 0.5·(1 + erf(x·√½))
constexpr float kInvSqrt2Pi = 0.3989422804014327f;  // its φ(x) = exp(-x²/2)/√(2π)

__device__ __forceinline__ float apply(BinaryOp op, float x, float y) {
  switch (op) {
    case BinaryOp::Add: return x + y;
    case BinaryOp::Sub: return x - y;
    case BinaryOp::Mul: return x * y;
    case BinaryOp::Div: return x / y;
  }
  return 0;
}

// out [rows, cols] (contiguous) = a op b, a and b walked by their 2-D strides (strided.cuh).
__global__ void binary_2d_kernel(BinaryOp op, const float* a, const float* b, float* out, int64_t rows, int64_t cols, int64_t a0,
                                 int64_t a1, int64_t b0, int64_t b1) {
  for (int64_t i = blockIdx.y; i < rows; i += gridDim.y)
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < cols; j += (int64_t)blockDim.x * gridDim.x)
      out[i * cols + j] = apply(op, a[i * a0 + j * a1], b[i * b0 + j * b1]);
}

// An operand's 4 values at row offset `row`, columns c..c+3: a 16-byte load when its column stride
// is 1, else (stride 0) its one value repeated.
__device__ __forceinline__ float4 load_cols4(const float* p, int64_t row, int64_t col_stride, int64_t c) {
  return col_stride ? *reinterpret_cast<const float4*>(p + row + c) : make_float4(p[row], p[row], p[row], p[row]);
}

// binary_2d_kernel 4 columns at a time (cols, out's rows and the unit-stride operands' rows
// multiples of 4 floats and 16-byte aligned; each operand's column stride 1 or 0); cols4 = cols / 4.
__global__ void binary_2d_vec_kernel(BinaryOp op, const float* a, const float* b, float* out, int64_t rows, int64_t cols4,
                                     int64_t a0, int64_t a1, int64_t b0, int64_t b1) {
  for (int64_t i = blockIdx.y; i < rows; i += gridDim.y)
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < cols4; j += (int64_t)blockDim.x * gridDim.x) {
      const float4 x = load_cols4(a, i * a0, a1, 4 * j), y = load_cols4(b, i * b0, b1, 4 * j);
      *reinterpret_cast<float4*>(out + i * 4 * cols4 + 4 * j) =
          make_float4(apply(op, x.x, y.x), apply(op, x.y, y.y), apply(op, x.z, y.z), apply(op, x.w, y.w));
    }
}

// Any other walk (strides[0] and [1]: a's and b's; out is contiguous).
__global__ void binary_kernel(BinaryOp op, const float* a, const float* b, float* out, int64_t n, StridedShape<3> s) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
    int64_t rem = i, ao = 0, bo = 0;
    for (int d = s.ndim - 1; d >= 0; --d) {
      int64_t idx = rem % s.shape[d];
      ao += idx * s.strides[0][d];
      bo += idx * s.strides[1][d];
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
    case UnaryOp::Silu: return v / (1.0f + expf(-v));
    case UnaryOp::GeluErf: return v * 0.5f * (1.0f + erff(v * kSqrtHalf));  // PyTorch's gelu, approximate="none"
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
    case UnaryOp::Silu: { float s = 1.0f / (1.0f + expf(-v)); return g * s * (1.0f + v * (1.0f - s)); }
    case UnaryOp::GeluErf: return g * (0.5f * (1.0f + erff(v * kSqrtHalf)) + v * expf(-0.5f * v * v) * kInvSqrt2Pi);
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

__global__ void unary_backward_bf16_kernel(UnaryOp op, const float* x, const float* g, uint16_t* gx, int64_t n, float alpha) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x)
    gx[i] = f32_to_bf16(unary_grad(op, x[i], g[i], alpha));
}

// Sum of the kThreads doubles each thread of the block holds, in a fixed tree; thread 0 gets it.
__device__ double block_sum(double v) {
  __shared__ double partial[kThreads];
  partial[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  return partial[0];
}

// Row sums in double like the CPU twin. A row longer than kSumChunk is cut into chunks summed by
// separate blocks (grid: chunks x rows) whose partials a second kernel adds in chunk order, so a
// full reduction of a large tensor (one row) spreads over the whole GPU instead of one block
// (which ran at ~2.6 GB/s), and the result stays deterministic.
constexpr int64_t kSumChunk = int64_t(1) << 16;

__global__ void sum_chunks_kernel(const float* x, double* partial, int64_t cols, int64_t chunks) {
  const float* row = x + int64_t(blockIdx.y) * cols;
  const int64_t begin = int64_t(blockIdx.x) * kSumChunk, end = begin + kSumChunk < cols ? begin + kSumChunk : cols;
  double acc = 0;
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) acc += row[j];
  acc = block_sum(acc);
  if (threadIdx.x == 0) partial[int64_t(blockIdx.y) * chunks + blockIdx.x] = acc;
}

// One block per row: out[row] = the sum of its `chunks` partials (or, with chunks == 0, of its
// `cols` floats directly).
__global__ void sum_rows_kernel(const float* x, const double* partial, float* out, int64_t cols, int64_t chunks) {
  double acc = 0;
  if (chunks > 0) {
    for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x) acc += partial[int64_t(blockIdx.x) * chunks + c];
  } else {
    const float* row = x + int64_t(blockIdx.x) * cols;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) acc += row[j];
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[blockIdx.x] = static_cast<float>(acc);
}
}  // namespace

void binary_f32(BinaryOp op, const float* a, const int64_t* as, const float* b, const int64_t* bs, float* out, int ndim,
                const int64_t* shape) {
  int64_t n = 1, out_strides[kMaxDims];
  for (int d = ndim - 1; d >= 0; --d) {
    out_strides[d] = n;
    n *= shape[d];
  }
  if (n == 0) return;
  const StridedShape<3> m = merge_dims<3>(ndim, shape, {as, bs, out_strides});
  auto rows_vec = [&](const float* p, int o) {  // operand o's rows suit binary_2d_vec_kernel
    return m.strides[o][1] == 0 || (m.strides[o][1] == 1 && m.strides[o][0] % 4 == 0 && reinterpret_cast<uintptr_t>(p) % 16 == 0);
  };
  if (m.ndim == 2 && m.shape[1] % 4 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0 && rows_vec(a, 0) && rows_vec(b, 1)) {
    binary_2d_vec_kernel<<<grid_2d(m.shape[0], m.shape[1] / 4, kThreads), kThreads, 0, current_stream()>>>(
        op, a, b, out, m.shape[0], m.shape[1] / 4, m.strides[0][0], m.strides[0][1], m.strides[1][0], m.strides[1][1]);
  } else if (m.ndim == 2) {
    binary_2d_kernel<<<grid_2d(m.shape[0], m.shape[1], kThreads), kThreads, 0, current_stream()>>>(
        op, a, b, out, m.shape[0], m.shape[1], m.strides[0][0], m.strides[0][1], m.strides[1][0], m.strides[1][1]);
  } else {
    binary_kernel<<<grid_for(n, kThreads), kThreads, 0, current_stream()>>>(op, a, b, out, n, m);
  }
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

void unary_backward_bf16(UnaryOp op, const float* x, const float* g, uint16_t* gx, int64_t n, float alpha) {
  if (n == 0) return;
  unary_backward_bf16_kernel<<<grid_for(n, kThreads), kThreads, 0, current_stream()>>>(op, x, g, gx, n, alpha);
  LR_CUDA_LAUNCH_CHECK("unary_backward_bf16");
}

void sum_rows_f32(const float* x, float* out, int64_t rows, int64_t cols) {
  if (rows == 0) return;
  const int64_t chunks = (cols + kSumChunk - 1) / kSumChunk;
  if (chunks <= 1 || rows > 65535) {  // one block per row already fills the GPU (or the grid's y is full)
    sum_rows_kernel<<<static_cast<unsigned>(rows), kThreads, 0, current_stream()>>>(x, nullptr, out, cols, 0);
    LR_CUDA_LAUNCH_CHECK("sum_rows_f32");
    return;
  }
  double* partial = scratch<double>(size_t(rows * chunks));
  sum_chunks_kernel<<<dim3(unsigned(chunks), unsigned(rows)), kThreads, 0, current_stream()>>>(x, partial, cols, chunks);
  LR_CUDA_LAUNCH_CHECK("sum_rows_f32 (chunks)");
  sum_rows_kernel<<<static_cast<unsigned>(rows), kThreads, 0, current_stream()>>>(x, partial, out, cols, chunks);
  LR_CUDA_LAUNCH_CHECK("sum_rows_f32");
  release(partial);
}

// A GEMM's epilogue when cuBLASLt cannot fuse it (matmul.cu's fallback): one thread per element.
__global__ void bias_gelu_rows_kernel(float* c, const float* bias, float* pre, int64_t rows, int64_t cols, int64_t ld) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows * cols; i += (int64_t)blockDim.x * gridDim.x) {
    const int64_t r = i / cols, j = i % cols;
    const float v = bias ? c[r * ld + j] + bias[j] : c[r * ld + j];
    if (pre) pre[r * ld + j] = v;
    c[r * ld + j] = pre ? unary(UnaryOp::Gelu, v, 0.0f) : v;
  }
}

void bias_gelu_rows_f32(float* c, const float* bias, float* pre, int64_t rows, int64_t cols, int64_t ld) {
  if (rows == 0 || cols == 0) return;
  bias_gelu_rows_kernel<<<grid_for(rows * cols, kThreads), kThreads, 0, current_stream()>>>(c, bias, pre, rows, cols, ld);
  LR_CUDA_LAUNCH_CHECK("bias_gelu_rows_f32");
}

}  // namespace cuda
}  // namespace lowrank
