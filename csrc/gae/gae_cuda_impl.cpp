// ATen glue of the CUDA GAE: checks, the current stream, and the CUDA registration. Built only
// when torch has CUDA.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "gae_checks.h"
#include "haml/cuda_launch.h"
#include "haml/ops.h"

namespace haml {

std::tuple<at::Tensor, at::Tensor> gae_cuda(const at::Tensor& rewards, const at::Tensor& values,
                                            const at::Tensor& next_values,
                                            const at::Tensor& terminated,
                                            const at::Tensor& truncated, double gamma, double lam) {
  detail::check_gae_args(rewards, values, next_values, terminated, truncated);
  const c10::cuda::CUDAGuard guard(rewards.device());
  const auto r = rewards.contiguous();
  const auto v = values.contiguous();
  const auto nv = next_values.contiguous();
  const auto term = terminated.contiguous();
  const auto trunc = truncated.contiguous();
  auto advantages = at::empty_like(r);
  auto returns = at::empty_like(r);
  const int64_t T = r.size(0);
  if (r.numel() == 0) return {advantages, returns};
  const int64_t B = r.numel() / T;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "haml_gae_cuda", [&] {
    HAML_CHECK_CUDA_LAUNCH("gae", cuda::gae(
        r.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(),
        nv.const_data_ptr<scalar_t>(), term.const_data_ptr<bool>(),
        trunc.const_data_ptr<bool>(), T, B, static_cast<scalar_t>(gamma),
        static_cast<scalar_t>(lam), advantages.mutable_data_ptr<scalar_t>(),
        returns.mutable_data_ptr<scalar_t>(), stream));
  });
  return {advantages, returns};
}

TORCH_LIBRARY_IMPL(haml, CUDA, m) { m.impl("gae", &gae_cuda); }

}  // namespace haml
