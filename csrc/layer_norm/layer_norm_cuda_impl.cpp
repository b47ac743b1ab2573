// ATen glue of the CUDA LayerNorm forward: checks, the current stream, and the CUDA registration.
// Built only when torch has CUDA.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "haml/cuda_launch.h"
#include "haml/ops.h"
#include "layer_norm_checks.h"

namespace haml {

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_fwd_cuda(const at::Tensor& input,
                                                                   const at::Tensor& weight,
                                                                   const at::Tensor& bias,
                                                                   double eps) {
  const c10::cuda::CUDAGuard guard(input.device());
  auto call = detail::prepare_layer_norm(input, weight, bias, eps);
  if (call.rows == 0) return {call.out, call.mean, call.rstd};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(call.input.scalar_type(), "haml_layer_norm_cuda", [&] {
    HAML_CHECK_CUDA_LAUNCH("layer_norm", cuda::layer_norm_fwd<scalar_t>(
        call.input.const_data_ptr<scalar_t>(), call.weight.const_data_ptr<scalar_t>(),
        call.bias.const_data_ptr<scalar_t>(), call.rows, call.d, static_cast<scalar_t>(eps),
        call.mean.mutable_data_ptr<scalar_t>(), call.rstd.mutable_data_ptr<scalar_t>(),
        call.out.mutable_data_ptr<scalar_t>(), stream));
  });
  return {call.out, call.mean, call.rstd};
}

TORCH_LIBRARY_IMPL(haml, CUDA, m) { m.impl("layer_norm_fwd", &layer_norm_fwd_cuda); }

}  // namespace haml
