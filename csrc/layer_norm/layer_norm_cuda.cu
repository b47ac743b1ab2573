// CUDA LayerNorm forward: one warp per row. The lanes stride along the row (consecutive lanes read
// consecutive entries, so each pass is coalesced), and the row's two sums are butterfly
// reductions that leave them in every lane. Same two-pass formula as layer_norm_kernel.h.
#include "haml/cuda_launch.h"

namespace haml::cuda {

namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;  // 256 threads
constexpr unsigned kFullMask = 0xffffffffu;

template <typename T>
__device__ __forceinline__ T warp_all_sum(T x) {
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) x += __shfl_xor_sync(kFullMask, x, offset);
  return x;
}

template <typename T>
__device__ __forceinline__ T reciprocal_sqrt(T x);
template <>
__device__ __forceinline__ float reciprocal_sqrt(float x) {
  return 1.0f / sqrtf(x);  // as the CPU kernel rounds it, not the approximate rsqrtf
}
template <>
__device__ __forceinline__ double reciprocal_sqrt(double x) {
  return 1.0 / sqrt(x);
}

template <typename T>
__global__ void layer_norm_kernel(const T* __restrict__ x, const T* __restrict__ gamma,
                                  const T* __restrict__ beta, int64_t rows, int64_t d, T eps,
                                  T* __restrict__ mean, T* __restrict__ rstd, T* __restrict__ out) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;  // a whole warp leaves together, so the shuffles stay full
  const T* __restrict__ xi = x + row * d;
  const T inv_d = T(1) / static_cast<T>(d);
  T sum = T(0);
  for (int64_t j = lane; j < d; j += kWarp) sum += xi[j];
  const T m = warp_all_sum(sum) * inv_d;
  T squares = T(0);
  for (int64_t j = lane; j < d; j += kWarp) {
    const T c = xi[j] - m;
    squares += c * c;
  }
  const T r = reciprocal_sqrt(warp_all_sum(squares) * inv_d + eps);
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
  T* __restrict__ oi = out + row * d;
  for (int64_t j = lane; j < d; j += kWarp) oi[j] = gamma[j] * ((xi[j] - m) * r) + beta[j];
}

}  // namespace

template <typename T>
cudaError_t layer_norm_fwd(const T* x, const T* gamma, const T* beta, int64_t rows, int64_t d,
                           T eps, T* mean, T* rstd, T* out, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  layer_norm_kernel<T><<<static_cast<unsigned>(blocks), kRowsPerBlock * kWarp, 0, stream>>>(
      x, gamma, beta, rows, d, eps, mean, rstd, out);
  return cudaGetLastError();
}

template cudaError_t layer_norm_fwd<float>(const float*, const float*, const float*, int64_t,
                                           int64_t, float, float*, float*, float*, cudaStream_t);
template cudaError_t layer_norm_fwd<double>(const double*, const double*, const double*, int64_t,
                                            int64_t, double, double*, double*, double*,
                                            cudaStream_t);

}  // namespace haml::cuda
