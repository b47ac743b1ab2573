// Block-wide sums for CUDA kernels: warp shuffles, then one warp over the warps' partials.
#pragma once

#include <cuda_runtime.h>

namespace haml::cuda::reduce {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ double warp_sum(double x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_down_sync(kFullMask, x, offset);
  return x;
}

// Sums K values over the block; the result is valid in thread 0. blockDim.x must be a multiple
// of 32 and at most 1024. shared must hold 32 * K doubles.
template <int K>
__device__ void block_sum(double (&v)[K], double* shared) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int k = 0; k < K; ++k) v[k] = warp_sum(v[k]);
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) shared[warp * K + k] = v[k];
  }
  __syncthreads();
  const int warps = blockDim.x / 32;
  if (warp == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) v[k] = lane < warps ? shared[lane * K + k] : 0.0;
#pragma unroll
    for (int k = 0; k < K; ++k) v[k] = warp_sum(v[k]);
  }
}

}  // namespace haml::cuda::reduce
