// ATen glue of the CUDA clipped surrogate: checks, outputs, workspace, stream, registration.
// Built only when torch has CUDA.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "clip_surrogate_checks.h"
#include "haml/cuda_launch.h"
#include "haml/ops.h"
#include "haml/optional_tensor.h"

namespace haml {

SurrogateFwdOut clip_surrogate_fwd_cuda(const at::Tensor& logp_new_in, const at::Tensor& logp_old_in,
                                        const at::Tensor& advantages_in,
                                        const std::optional<at::Tensor>& factor_in,
                                        const std::optional<at::Tensor>& mask_in,
                                        const std::optional<at::Tensor>& entropy_in,
                                        std::optional<double> clip, double entropy_coef) {
  const c10::cuda::CUDAGuard guard(logp_new_in.device());
  const auto call = detail::prepare_clip_surrogate_fwd(
      logp_new_in, logp_old_in, advantages_in, factor_in, mask_in, entropy_in, clip, entropy_coef);
  // References rather than a structured binding, which lambdas cannot capture before clang 16.
  const at::Tensor &logp_new = call.logp_new, &logp_old = call.logp_old,
                   &advantages = call.advantages, &ratio = call.ratio;
  const std::optional<at::Tensor>&factor = call.factor, &mask = call.mask, &entropy = call.entropy;
  const auto options = logp_new.options();
  auto loss = at::empty({}, options);
  auto clip_fraction = at::empty({}, options);
  auto approx_kl = at::empty({}, options);
  auto ratio_mean = at::empty({}, options);
  auto weight_sum = at::empty({}, options);
  auto workspace =
      at::empty({cuda::surrogate_workspace_doubles()}, options.dtype(at::kDouble));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(logp_new.scalar_type(), "haml_clip_surrogate_fwd_cuda", [&] {
    HAML_CHECK_CUDA_LAUNCH("clip_surrogate_fwd",
                 cuda::clip_surrogate_fwd<scalar_t>(
                     logp_new.const_data_ptr<scalar_t>(), logp_old.const_data_ptr<scalar_t>(),
                     advantages.const_data_ptr<scalar_t>(), detail::optional_ptr<scalar_t>(factor),
                     detail::optional_ptr<scalar_t>(mask), detail::optional_ptr<scalar_t>(entropy),
                     logp_new.numel(), clip.has_value(), clip.value_or(0.0), entropy_coef,
                     workspace.mutable_data_ptr<double>(), ratio.mutable_data_ptr<scalar_t>(),
                     loss.mutable_data_ptr<scalar_t>(), clip_fraction.mutable_data_ptr<scalar_t>(),
                     approx_kl.mutable_data_ptr<scalar_t>(),
                     ratio_mean.mutable_data_ptr<scalar_t>(),
                     weight_sum.mutable_data_ptr<scalar_t>(), stream));
  });
  return {loss, clip_fraction, approx_kl, ratio_mean, weight_sum, ratio};
}

std::tuple<at::Tensor, at::Tensor> clip_surrogate_bwd_cuda(
    const at::Tensor& grad_loss_in, const at::Tensor& ratio_in, const at::Tensor& advantages_in,
    const std::optional<at::Tensor>& factor_in, const std::optional<at::Tensor>& mask_in,
    const at::Tensor& weight_sum_in, std::optional<double> clip, double entropy_coef,
    bool entropy_grad) {
  const c10::cuda::CUDAGuard guard(ratio_in.device());
  const auto call = detail::prepare_clip_surrogate_bwd(grad_loss_in, ratio_in, advantages_in,
                                                       factor_in, mask_in, weight_sum_in, clip,
                                                       entropy_grad);
  // References rather than a structured binding, which lambdas cannot capture before clang 16.
  const at::Tensor &grad_loss = call.grad_loss, &ratio = call.ratio,
                   &advantages = call.advantages, &weight_sum = call.weight_sum,
                   &grad_logp_new = call.grad_logp_new, &grad_entropy = call.grad_entropy;
  const std::optional<at::Tensor>&factor = call.factor, &mask = call.mask;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(ratio.scalar_type(), "haml_clip_surrogate_bwd_cuda", [&] {
    HAML_CHECK_CUDA_LAUNCH("clip_surrogate_bwd",
                 cuda::clip_surrogate_bwd<scalar_t>(
                     grad_loss.const_data_ptr<scalar_t>(), ratio.const_data_ptr<scalar_t>(),
                     advantages.const_data_ptr<scalar_t>(), detail::optional_ptr<scalar_t>(factor),
                     detail::optional_ptr<scalar_t>(mask), weight_sum.const_data_ptr<scalar_t>(),
                     ratio.numel(), clip.has_value(), clip.value_or(0.0), entropy_coef,
                     grad_logp_new.mutable_data_ptr<scalar_t>(),
                     entropy_grad ? grad_entropy.mutable_data_ptr<scalar_t>() : nullptr, stream));
  });
  return {grad_logp_new, grad_entropy};
}

TORCH_LIBRARY_IMPL(haml, CUDA, m) {
  m.impl("clip_surrogate_fwd", &clip_surrogate_fwd_cuda);
  m.impl("clip_surrogate_bwd", &clip_surrogate_bwd_cuda);
}

}  // namespace haml
