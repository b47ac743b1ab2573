// CUDA GAE: one thread per batch column scanning backwards over time. Consecutive threads own
// consecutive columns, so every row access of a warp is one coalesced transaction.
#include "gae_kernel.h"
#include "haml/cuda_launch.h"

namespace haml::cuda {

namespace {

constexpr int kThreads = 256;

template <typename scalar_t>
__global__ void gae_kernel(const scalar_t* __restrict__ rewards, const scalar_t* __restrict__ values,
                           const scalar_t* __restrict__ next_values,
                           const bool* __restrict__ terminated, const bool* __restrict__ truncated,
                           int64_t T, int64_t B, scalar_t gamma, scalar_t lam,
                           scalar_t* __restrict__ advantages, scalar_t* __restrict__ returns) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= B) return;
  const scalar_t gamma_lam = gamma * lam;
  scalar_t next_adv = scalar_t(0);  // A_T
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t i = t * B + col;
    const scalar_t value = values[i];
    next_adv = ::haml::detail::gae_step<scalar_t>(rewards[i], value, next_values[i], terminated[i],
                                          truncated[i], next_adv, gamma, gamma_lam);
    advantages[i] = next_adv;
    returns[i] = next_adv + value;
  }
}

template <typename scalar_t>
cudaError_t launch_gae(const scalar_t* rewards, const scalar_t* values,
                       const scalar_t* next_values, const bool* terminated, const bool* truncated,
                       int64_t T, int64_t B, scalar_t gamma, scalar_t lam, scalar_t* advantages,
                       scalar_t* returns, cudaStream_t stream) {
  if (T == 0 || B == 0) return cudaSuccess;
  const int64_t blocks = (B + kThreads - 1) / kThreads;
  gae_kernel<scalar_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      rewards, values, next_values, terminated, truncated, T, B, gamma, lam, advantages, returns);
  return cudaGetLastError();
}

}  // namespace

cudaError_t gae(const float* rewards, const float* values, const float* next_values,
                const bool* terminated, const bool* truncated, int64_t T, int64_t B, float gamma,
                float lam, float* advantages, float* returns, cudaStream_t stream) {
  return launch_gae<float>(rewards, values, next_values, terminated, truncated, T, B, gamma, lam,
                           advantages, returns, stream);
}

cudaError_t gae(const double* rewards, const double* values, const double* next_values,
                const bool* terminated, const bool* truncated, int64_t T, int64_t B, double gamma,
                double lam, double* advantages, double* returns, cudaStream_t stream) {
  return launch_gae<double>(rewards, values, next_values, terminated, truncated, T, B, gamma, lam,
                            advantages, returns, stream);
}

}  // namespace haml::cuda
