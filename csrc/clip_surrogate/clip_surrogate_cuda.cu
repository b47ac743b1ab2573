// CUDA clipped surrogate. Forward: a grid-stride pass writes the ratio and per-block weighted
// sums, then one block adds the partials in a fixed order (deterministic, no atomics) and writes
// the 0-d outputs. Backward: one elementwise pass that reads grad_loss and weight_sum on the
// device, so autograd never waits on the host.
#include "clip_surrogate_math.h"
#include "common/reduce.cuh"
#include "haml/cuda_launch.h"

namespace haml::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;  // partials the finishing block adds; also the workspace rows
enum SumIndex { kObjective, kWeight, kEntropy, kClipped, kKl, kRatio, kNumSums };

template <typename scalar_t>
__global__ void surrogate_partials(const scalar_t* __restrict__ logp_new,
                                   const scalar_t* __restrict__ logp_old,
                                   const scalar_t* __restrict__ advantages,
                                   const scalar_t* __restrict__ factor,
                                   const scalar_t* __restrict__ mask,
                                   const scalar_t* __restrict__ entropy, int64_t n, bool clipped,
                                   scalar_t clip, scalar_t* __restrict__ ratio,
                                   double* __restrict__ partials) {
  __shared__ double shared[32 * kNumSums];
  double acc[kNumSums] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const scalar_t f = factor ? factor[i] : scalar_t(1);
    const auto e = ::haml::detail::surrogate_element<scalar_t>(logp_new[i], logp_old[i], advantages[i],
                                                       f, clipped, clip);
    ratio[i] = e.ratio;
    const double w = mask ? static_cast<double>(mask[i]) : 1.0;
    // A zero weight excludes the sample, even where its terms are inf or NaN.
    if (w == 0.0) continue;
    acc[kObjective] += w * e.objective;
    acc[kWeight] += w;
    if (entropy) acc[kEntropy] += w * entropy[i];
    acc[kClipped] += w * e.clipped;
    acc[kKl] += w * e.kl;
    acc[kRatio] += w * e.ratio;
  }
  reduce::block_sum<kNumSums>(acc, shared);
  if (threadIdx.x == 0) {
    for (int k = 0; k < kNumSums; ++k) partials[blockIdx.x * kNumSums + k] = acc[k];
  }
}

template <typename scalar_t>
__global__ void surrogate_finish(const double* __restrict__ partials, int blocks,
                                 double entropy_coef, scalar_t* loss, scalar_t* clip_fraction,
                                 scalar_t* approx_kl, scalar_t* ratio_mean,
                                 scalar_t* weight_sum) {
  __shared__ double shared[32 * kNumSums];
  double acc[kNumSums] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) {
    for (int k = 0; k < kNumSums; ++k) acc[k] += partials[b * kNumSums + k];
  }
  reduce::block_sum<kNumSums>(acc, shared);
  if (threadIdx.x == 0) {
    // No active sample: every mean is 0 rather than 0/0.
    const double denom = acc[kWeight] != 0.0 ? acc[kWeight] : 1.0;
    *loss = static_cast<scalar_t>(-(acc[kObjective] + entropy_coef * acc[kEntropy]) / denom);
    *clip_fraction = static_cast<scalar_t>(acc[kClipped] / denom);
    *approx_kl = static_cast<scalar_t>(acc[kKl] / denom);
    *ratio_mean = static_cast<scalar_t>(acc[kRatio] / denom);
    *weight_sum = static_cast<scalar_t>(acc[kWeight]);
  }
}

template <typename scalar_t>
__global__ void surrogate_backward(const scalar_t* __restrict__ grad_loss,
                                   const scalar_t* __restrict__ ratio,
                                   const scalar_t* __restrict__ advantages,
                                   const scalar_t* __restrict__ factor,
                                   const scalar_t* __restrict__ mask,
                                   const scalar_t* __restrict__ weight_sum, int64_t n,
                                   bool clipped, scalar_t clip, scalar_t entropy_coef,
                                   scalar_t* __restrict__ grad_logp_new,
                                   scalar_t* __restrict__ grad_entropy) {
  const scalar_t w_sum = *weight_sum;
  // loss = -(sum w obj + c sum w H) / W: each sample's share of the gradient is -g w / W.
  const scalar_t scale = w_sum != scalar_t(0) ? -*grad_loss / w_sum : scalar_t(0);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const scalar_t w = mask ? mask[i] : scalar_t(1);
    if (w == scalar_t(0)) {
      grad_logp_new[i] = scalar_t(0);
      if (grad_entropy) grad_entropy[i] = scalar_t(0);
      continue;
    }
    const scalar_t f = factor ? factor[i] : scalar_t(1);
    grad_logp_new[i] =
        scale * w * ::haml::detail::surrogate_objective_grad<scalar_t>(ratio[i], advantages[i], f, clipped,
                                                               clip);
    if (grad_entropy) grad_entropy[i] = entropy_coef * scale * w;
  }
}

int grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

}  // namespace

int64_t surrogate_workspace_doubles() { return static_cast<int64_t>(kMaxBlocks) * kNumSums; }

template <typename scalar_t>
cudaError_t clip_surrogate_fwd(const scalar_t* logp_new, const scalar_t* logp_old,
                               const scalar_t* advantages, const scalar_t* factor,
                               const scalar_t* mask, const scalar_t* entropy, int64_t n,
                               bool clipped, double clip, double entropy_coef, double* workspace,
                               scalar_t* ratio, scalar_t* loss, scalar_t* clip_fraction,
                               scalar_t* approx_kl, scalar_t* ratio_mean, scalar_t* weight_sum,
                               cudaStream_t stream) {
  const int blocks = grid_for(n);
  surrogate_partials<scalar_t><<<blocks, kThreads, 0, stream>>>(
      logp_new, logp_old, advantages, factor, mask, entropy, n, clipped,
      static_cast<scalar_t>(clip), ratio, workspace);
  surrogate_finish<scalar_t><<<1, kThreads, 0, stream>>>(
      workspace, blocks, entropy_coef, loss, clip_fraction, approx_kl, ratio_mean, weight_sum);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t clip_surrogate_bwd(const scalar_t* grad_loss, const scalar_t* ratio,
                               const scalar_t* advantages, const scalar_t* factor,
                               const scalar_t* mask, const scalar_t* weight_sum, int64_t n,
                               bool clipped, double clip, double entropy_coef,
                               scalar_t* grad_logp_new, scalar_t* grad_entropy,
                               cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  surrogate_backward<scalar_t><<<grid_for(n), kThreads, 0, stream>>>(
      grad_loss, ratio, advantages, factor, mask, weight_sum, n, clipped,
      static_cast<scalar_t>(clip), static_cast<scalar_t>(entropy_coef), grad_logp_new,
      grad_entropy);
  return cudaGetLastError();
}

#define HAML_INSTANTIATE_SURROGATE(scalar_t)                                                   \
  template cudaError_t clip_surrogate_fwd<scalar_t>(                                           \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,     \
      const scalar_t*, int64_t, bool, double, double, double*, scalar_t*, scalar_t*, scalar_t*, \
      scalar_t*, scalar_t*, scalar_t*, cudaStream_t);                                          \
  template cudaError_t clip_surrogate_bwd<scalar_t>(                                           \
      const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,     \
      const scalar_t*, int64_t, bool, double, double, scalar_t*, scalar_t*, cudaStream_t);
HAML_INSTANTIATE_SURROGATE(float)
HAML_INSTANTIATE_SURROGATE(double)
#undef HAML_INSTANTIATE_SURROGATE

}  // namespace haml::cuda
