// ATen glue of the CUDA GAE: checks, the current stream, and the CUDA registration. Built only
// when torch has CUDA.
#include <ATen/Dispatch.h>
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
  const c10::cuda::CUDAGuard guard(rewards.device());
  auto call = detail::prepare_gae(rewards, values, next_values, terminated, truncated, gamma,
                                   lam);
  if (call.T == 0 || call.B == 0) return {call.advantages, call.returns};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(call.rewards.scalar_type(), "haml_gae_cuda", [&] {
    HAML_CHECK_CUDA_LAUNCH("gae", cuda::gae(
        call.rewards.const_data_ptr<scalar_t>(), call.values.const_data_ptr<scalar_t>(),
        call.next_values.const_data_ptr<scalar_t>(), call.terminated.const_data_ptr<bool>(),
        call.truncated.const_data_ptr<bool>(), call.T, call.B, static_cast<scalar_t>(gamma),
        static_cast<scalar_t>(lam), call.advantages.mutable_data_ptr<scalar_t>(),
        call.returns.mutable_data_ptr<scalar_t>(), stream));
  });
  return {call.advantages, call.returns};
}

TORCH_LIBRARY_IMPL(haml, CUDA, m) { m.impl("gae", &gae_cuda); }

}  // namespace haml
