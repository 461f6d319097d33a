// The CUDA halves of ijepa-encoder's fused layer kernels (kernels/mod.rs has the CPU halves,
// the compositions they replace and the checks that choose between them). Arithmetic is f32
// whatever the storage type; bf16 values are read widened and written rounded to nearest even,
// as candle's and PyTorch's casts do.
//
// Row kernels (LayerNorm, softmax) give one warp to a row; column sums run in two passes
// (partial sums per chunk of rows, then the chunks in order), so every result is the same from
// run to run.
#include <cuda_bf16.h>
#include <stdint.h>

namespace {

__device__ __forceinline__ float load(const float* p, size_t i) { return p[i]; }
__device__ __forceinline__ float load(const __nv_bfloat16* p, size_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void store(float* p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, size_t i, float v) { p[i] = __float2bfloat16_rn(v); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Mean and 1/sqrt(var + eps) of one row of d values (two passes, as the CPU kernel).
template <typename T>
__device__ __forceinline__ void row_stats(const T* x, int d, float eps, int lane, float* mean, float* rstd) {
  float s = 0.f;
  for (int i = lane; i < d; i += 32) s += load(x, i);
  const float m = warp_sum(s) / d;
  float q = 0.f;
  for (int i = lane; i < d; i += 32) {
    const float c = load(x, i) - m;
    q += c * c;
  }
  *mean = m;
  *rstd = 1.f / sqrtf(warp_sum(q) / d + eps);  // as the CPU: not the approximate rsqrtf
}

// y = (x - mean) * rstd * w + b per row; also the row's mean and rstd (for the backward).
template <typename T>
__device__ void layer_norm_fwd(const T* x, const float* w, const float* b, float* y, float* stats, int rows,
                               int d, float eps) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return;
  const T* xr = x + (size_t)row * d;
  float* yr = y + (size_t)row * d;
  float mean, rstd;
  row_stats(xr, d, eps, lane, &mean, &rstd);
  for (int i = lane; i < d; i += 32) yr[i] = (load(xr, i) - mean) * rstd * w[i] + b[i];
  if (stats != nullptr && lane == 0) {
    stats[2 * (size_t)row] = mean;
    stats[2 * (size_t)row + 1] = rstd;
  }
}

// dx = rstd * (g*w - mean(g*w) - xhat * mean(g*w*xhat)) per row; the row's stats too.
template <typename T>
__device__ void layer_norm_bwd_x(const T* x, const float* w, const float* g, float* dx, float* stats, int rows,
                                 int d, float eps) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return;
  const T* xr = x + (size_t)row * d;
  const float* gr = g + (size_t)row * d;
  float* dxr = dx + (size_t)row * d;
  float mean, rstd;
  row_stats(xr, d, eps, lane, &mean, &rstd);
  float sg = 0.f, sgx = 0.f;
  for (int i = lane; i < d; i += 32) {
    const float gh = gr[i] * w[i];
    sg += gh;
    sgx += gh * (load(xr, i) - mean) * rstd;
  }
  const float mg = warp_sum(sg) / d, mgx = warp_sum(sgx) / d;
  for (int i = lane; i < d; i += 32) {
    const float xh = (load(xr, i) - mean) * rstd;
    dxr[i] = rstd * (gr[i] * w[i] - mg - xh * mgx);
  }
  if (lane == 0) {
    stats[2 * (size_t)row] = mean;
    stats[2 * (size_t)row + 1] = rstd;
  }
}

// Partial column sums over chunks of rows: partial[c][j] = sum over the chunk's rows r of
// g[r][j] (the bias gradient), and with x: of g[r][j] * (x[r][j] - mean_r) * rstd_r (the
// LayerNorm weight's), written after the first d values. Block (32, 8), grid (ceil(d/32), chunks).
template <typename TG, typename TX>
__device__ void column_partials(const TG* g, const TX* x, const float* stats, float* partial, int rows, int d,
                                int rows_per_chunk) {
  __shared__ float sg[8][33];
  __shared__ float sx[8][33];
  const int col = blockIdx.x * 32 + threadIdx.x;
  const int first = blockIdx.y * rows_per_chunk;
  const int last = min(rows, first + rows_per_chunk);
  float acc_g = 0.f, acc_x = 0.f;
  if (col < d) {
    for (int r = first + threadIdx.y; r < last; r += 8) {
      const float gv = load(g, (size_t)r * d + col);
      acc_g += gv;
      if (x != nullptr) acc_x += gv * (load(x, (size_t)r * d + col) - stats[2 * (size_t)r]) * stats[2 * (size_t)r + 1];
    }
  }
  sg[threadIdx.y][threadIdx.x] = acc_g;
  sx[threadIdx.y][threadIdx.x] = acc_x;
  __syncthreads();
  if (threadIdx.y == 0 && col < d) {
    float tg = 0.f, tx = 0.f;
    for (int k = 0; k < 8; ++k) {
      tg += sg[k][threadIdx.x];
      tx += sx[k][threadIdx.x];
    }
    const size_t width = x != nullptr ? 2 * (size_t)d : (size_t)d;
    float* out = partial + blockIdx.y * width;
    if (x != nullptr) {
      out[col] = tx;
      out[d + col] = tg;
    } else {
      out[col] = tg;
    }
  }
}

// The row's max and 1 / sum(exp(x - max)), for a warp.
template <typename T>
__device__ __forceinline__ void softmax_stats(const T* x, int n, int lane, float* max, float* inv) {
  float m = -INFINITY;
  for (int i = lane; i < n; i += 32) m = fmaxf(m, load(x, i));
  m = warp_max(m);
  float s = 0.f;
  for (int i = lane; i < n; i += 32) s += expf(load(x, i) - m);
  *max = m;
  *inv = 1.f / warp_sum(s);
}

}  // namespace

extern "C" {

__global__ void ijepa_layer_norm_f32(const float* x, const float* w, const float* b, float* y, float* stats,
                                     int rows, int d, float eps) {
  layer_norm_fwd(x, w, b, y, stats, rows, d, eps);
}

__global__ void ijepa_layer_norm_grad_x_f32(const float* x, const float* w, const float* g, float* dx, float* stats,
                                            int rows, int d, float eps) {
  layer_norm_bwd_x(x, w, g, dx, stats, rows, d, eps);
}

// Partials of (dw | db) of a LayerNorm: x f32, g f32.
__global__ void ijepa_layer_norm_partials_f32(const float* g, const float* x, const float* stats, float* partial,
                                              int rows, int d, int rows_per_chunk) {
  column_partials(g, x, stats, partial, rows, d, rows_per_chunk);
}

// Partials of the column sums of g (a bias gradient).
__global__ void ijepa_column_partials_f32(const float* g, float* partial, int rows, int d, int rows_per_chunk) {
  column_partials(g, (const float*)nullptr, nullptr, partial, rows, d, rows_per_chunk);
}
__global__ void ijepa_column_partials_bf16(const __nv_bfloat16* g, float* partial, int rows, int d,
                                           int rows_per_chunk) {
  column_partials(g, (const float*)nullptr, nullptr, partial, rows, d, rows_per_chunk);
}

// out[j] = sum over chunks c, in order, of partial[c][j], j < width.
__global__ void ijepa_sum_partials(const float* partial, float* out, int chunks, int width) {
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < width; j += gridDim.x * blockDim.x) {
    float s = 0.f;
    for (int c = 0; c < chunks; ++c) s += partial[(size_t)c * width + j];
    out[j] = s;
  }
}

// Softmax over rows of n: y = exp(x - max) / sum. Input and output f32 or bf16 (f32 math).
#define SOFTMAX(NAME, TI, TO)                                                                    \
  __global__ void NAME(const TI* x, TO* y, int rows, int n) {                                   \
    const int lane = threadIdx.x & 31;                                                           \
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);                         \
    if (row >= rows) return;                                                                     \
    const TI* xr = x + (size_t)row * n;                                                          \
    TO* yr = y + (size_t)row * n;                                                                \
    float m, inv;                                                                                \
    softmax_stats(xr, n, lane, &m, &inv);                                                        \
    for (int i = lane; i < n; i += 32) store(yr, i, expf(load(xr, i) - m) * inv);              \
  }
SOFTMAX(ijepa_softmax_f32, float, float)
SOFTMAX(ijepa_softmax_bf16, __nv_bfloat16, __nv_bfloat16)

// Softmax backward from the input (the probabilities recomputed in f32, so a bf16 output
// need not be kept): dx = y * (g - sum(g * y)).
#define SOFTMAX_GRAD(NAME, TI, TG)                                                               \
  __global__ void NAME(const TI* x, const TG* g, TG* dx, int rows, int n) {                     \
    const int lane = threadIdx.x & 31;                                                           \
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);                         \
    if (row >= rows) return;                                                                     \
    const TI* xr = x + (size_t)row * n;                                                          \
    const TG* gr = g + (size_t)row * n;                                                          \
    TG* dxr = dx + (size_t)row * n;                                                              \
    float m, inv;                                                                                \
    softmax_stats(xr, n, lane, &m, &inv);                                                        \
    float dot = 0.f;                                                                             \
    for (int i = lane; i < n; i += 32) dot += load(gr, i) * (expf(load(xr, i) - m) * inv);     \
    dot = warp_sum(dot);                                                                         \
    for (int i = lane; i < n; i += 32) {                                                         \
      const float yv = expf(load(xr, i) - m) * inv;                                            \
      store(dxr, i, yv * (load(gr, i) - dot));                                                   \
    }                                                                                            \
  }
SOFTMAX_GRAD(ijepa_softmax_grad_f32, float, float)
SOFTMAX_GRAD(ijepa_softmax_grad_bf16, __nv_bfloat16, __nv_bfloat16)

// Exact GELU 0.5 x (1 + erf(x / sqrt 2)) and its backward g * (Phi(x) + x phi(x)).
#define GELU(NAME, T)                                                                            \
  __global__ void NAME(const T* x, T* y, size_t n) {                                            \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;                        \
         i += (size_t)gridDim.x * blockDim.x) {                                                  \
      const float v = load(x, i);                                                                \
      store(y, i, 0.5f * v * (1.f + erff(v * 0.70710678118654752f)));                           \
    }                                                                                            \
  }
#define GELU_GRAD(NAME, T)                                                                       \
  __global__ void NAME(const T* x, const T* g, T* dx, size_t n) {                               \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;                        \
         i += (size_t)gridDim.x * blockDim.x) {                                                  \
      const float v = load(x, i);                                                                \
      const float cdf = 0.5f * (1.f + erff(v * 0.70710678118654752f));                           \
      const float pdf = 0.3989422804014327f * expf(-0.5f * v * v);                            \
      store(dx, i, load(g, i) * (cdf + v * pdf));                                                \
    }                                                                                            \
  }
GELU(ijepa_gelu_f32, float)
GELU(ijepa_gelu_bf16, __nv_bfloat16)
GELU_GRAD(ijepa_gelu_grad_f32, float)
GELU_GRAD(ijepa_gelu_grad_bf16, __nv_bfloat16)

// y = x + b per row of d, the sum in f32 (a GEMM epilogue's): x and y f32 or bf16, b f32.
#define BIAS_ADD(NAME, T)                                                                        \
  __global__ void NAME(const T* x, T* y, const float* b, size_t n, int d) {                     \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;                        \
         i += (size_t)gridDim.x * blockDim.x) {                                                  \
      store(y, i, load(x, i) + b[i % d]);                                                        \
    }                                                                                            \
  }
BIAS_ADD(ijepa_bias_add_f32, float)
BIAS_ADD(ijepa_bias_add_bf16, __nv_bfloat16)

}  // extern "C"
