// The CUDA halves of the optimizer kernels (kernels/adamw.rs and kernels/ema.rs have the CPU
// halves and the compositions they replace). Every product and sum is rounded on its own
// (__fmul_rn, __fadd_rn: no fused multiply-add), in the CPU kernels' order, so a GPU update
// computes bit for bit what the CPU computes from the same values.
#include <stdint.h>

struct Adam {
  float decay, b1, one_minus_b1, b2, one_minus_b2, inv_sqrt_bias2, eps, step_size;
};

__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }

// (m·b1 + 0) + (g·(1 − b1) + 0)
__device__ __forceinline__ float first(const Adam& c, float m, float g) {
  return add(add(mul(m, c.b1), 0.f), add(mul(g, c.one_minus_b1), 0.f));
}
// (v·b2 + 0) + ((g·g)·(1 − b2) + 0)
__device__ __forceinline__ float second(const Adam& c, float v, float g) {
  return add(add(mul(v, c.b2), 0.f), add(mul(mul(g, g), c.one_minus_b2), 0.f));
}
// (p·decay + 0) − ((m / ((√v·inv_sqrt_bias2 + 0)·1 + eps))·step_size + 0)
__device__ __forceinline__ float param(const Adam& c, float p, float m, float v) {
  const float denom = add(mul(add(mul(__fsqrt_rn(v), c.inv_sqrt_bias2), 0.f), 1.f), c.eps);
  return __fsub_rn(add(mul(p, c.decay), 0.f), add(mul(__fdiv_rn(m, denom), c.step_size), 0.f));
}

#define GRID_STRIDE(i, n) \
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

extern "C" {

// Writes NaN to *flag if the update would leave a parameter or a second moment non-finite
// (x·0 + y·0 is 0 for finite x, y and NaN otherwise); reads only.
__global__ void ijepa_adamw_check(const float* p, const float* g, const float* m, const float* v, float* flag,
                                  size_t n, Adam c) {
  GRID_STRIDE(i, n) {
    const float m1 = first(c, m[i], g[i]), v1 = second(c, v[i], g[i]);
    const float probe = add(mul(param(c, p[i], m1, v1), 0.f), mul(v1, 0.f));
    if (probe != 0.f) *flag = __int_as_float(0x7fc00000);
  }
}

__global__ void ijepa_adamw_first(float* m, const float* g, size_t n, Adam c) {
  GRID_STRIDE(i, n) m[i] = first(c, m[i], g[i]);
}

__global__ void ijepa_adamw_second(float* v, const float* g, size_t n, Adam c) {
  GRID_STRIDE(i, n) v[i] = second(c, v[i], g[i]);
}

__global__ void ijepa_adamw_param(float* p, const float* m, const float* v, size_t n, Adam c) {
  GRID_STRIDE(i, n) p[i] = param(c, p[i], m[i], v[i]);
}

// t = (t·momentum + 0) + (s·(1 − momentum) + 0)
__global__ void ijepa_ema(float* t, const float* s, size_t n, float momentum, float one_minus) {
  GRID_STRIDE(i, n) t[i] = add(add(mul(t[i], momentum), 0.f), add(mul(s[i], one_minus), 0.f));
}

}  // extern "C"
