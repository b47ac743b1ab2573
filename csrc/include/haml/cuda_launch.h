// Launchers of haml's CUDA kernels. They take raw device pointers, sizes and a cudaStream_t and
// include only the CUDA runtime: the .cu files compile with nvcc where torch is a CPU build, and
// the ATen glue (*_cuda_impl.cpp) that calls them is built only with CUDA torch.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace haml::cuda {

// GAE over row-major [T, B]: one thread per column scans backwards over time.
cudaError_t gae(const float* rewards, const float* values, const float* next_values,
                const bool* terminated, const bool* truncated, int64_t T, int64_t B, float gamma,
                float lam, float* advantages, float* returns, cudaStream_t stream);
cudaError_t gae(const double* rewards, const double* values, const double* next_values,
                const bool* terminated, const bool* truncated, int64_t T, int64_t B, double gamma,
                double lam, double* advantages, double* returns, cudaStream_t stream);

// Clipped surrogate forward over n samples. factor, mask and entropy may be null (1, 1, absent).
// Writes ratio[n] and the five 0-d outputs loss, clip_fraction, approx_kl, ratio_mean,
// weight_sum. workspace holds surrogate_workspace_doubles() doubles.
int64_t surrogate_workspace_doubles();
template <typename scalar_t>
cudaError_t clip_surrogate_fwd(const scalar_t* logp_new, const scalar_t* logp_old,
                               const scalar_t* advantages, const scalar_t* factor,
                               const scalar_t* mask, const scalar_t* entropy, int64_t n,
                               bool clipped, double clip, double entropy_coef, double* workspace,
                               scalar_t* ratio, scalar_t* loss, scalar_t* clip_fraction,
                               scalar_t* approx_kl, scalar_t* ratio_mean, scalar_t* weight_sum,
                               cudaStream_t stream);

// Clipped surrogate backward: grad_logp_new[n] and, when grad_entropy is not null, grad_entropy[n].
// grad_loss and weight_sum are device scalars, read on the device (no host sync).
template <typename scalar_t>
cudaError_t clip_surrogate_bwd(const scalar_t* grad_loss, const scalar_t* ratio,
                               const scalar_t* advantages, const scalar_t* factor,
                               const scalar_t* mask, const scalar_t* weight_sum, int64_t n,
                               bool clipped, double clip, double entropy_coef,
                               scalar_t* grad_logp_new, scalar_t* grad_entropy,
                               cudaStream_t stream);

// LayerNorm over the last dimension of row-major [rows, d]: out = γ ⊙ (x − μ)/√(σ² + eps) + β,
// with each row's μ and 1/√(σ² + eps) written to mean[rows] and rstd[rows]. One warp per row.
template <typename T>
cudaError_t layer_norm_fwd(const T* x, const T* gamma, const T* beta, int64_t rows, int64_t d,
                           T eps, T* mean, T* rstd, T* out, cudaStream_t stream);

}  // namespace haml::cuda
