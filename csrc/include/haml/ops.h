// C++ entry points of the native ops. Each op has a CPU and a CUDA function with identical
// signatures; both are registered with TORCH_LIBRARY_IMPL and chosen by the dispatcher, never by
// a branch on the device. Schemas: csrc/registration.cpp. Semantics: haml/ops/<op>/reference.py.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <tuple>
#include <vector>

namespace haml {

// GAE over time-major [T, *batch] tensors; terminated/truncated are bool.
std::tuple<at::Tensor, at::Tensor> gae_cpu(const at::Tensor& rewards, const at::Tensor& values,
                                           const at::Tensor& next_values,
                                           const at::Tensor& terminated,
                                           const at::Tensor& truncated, double gamma, double lam);
std::tuple<at::Tensor, at::Tensor> gae_cuda(const at::Tensor& rewards, const at::Tensor& values,
                                            const at::Tensor& next_values,
                                            const at::Tensor& terminated,
                                            const at::Tensor& truncated, double gamma, double lam);

// Clipped surrogate forward: (loss, clip_fraction, approx_kl, ratio_mean, weight_sum, ratio).
// weight_sum and ratio are saved for the backward; the Python wrapper hides them.
using SurrogateFwdOut =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
SurrogateFwdOut clip_surrogate_fwd_cpu(const at::Tensor& logp_new, const at::Tensor& logp_old,
                                       const at::Tensor& advantages,
                                       const std::optional<at::Tensor>& factor,
                                       const std::optional<at::Tensor>& mask,
                                       const std::optional<at::Tensor>& entropy,
                                       std::optional<double> clip, double entropy_coef);
SurrogateFwdOut clip_surrogate_fwd_cuda(const at::Tensor& logp_new, const at::Tensor& logp_old,
                                        const at::Tensor& advantages,
                                        const std::optional<at::Tensor>& factor,
                                        const std::optional<at::Tensor>& mask,
                                        const std::optional<at::Tensor>& entropy,
                                        std::optional<double> clip, double entropy_coef);

// Clipped surrogate backward: (d loss / d logp_new, d loss / d entropy). The second is an empty
// tensor when entropy_grad is false.
std::tuple<at::Tensor, at::Tensor> clip_surrogate_bwd_cpu(
    const at::Tensor& grad_loss, const at::Tensor& ratio, const at::Tensor& advantages,
    const std::optional<at::Tensor>& factor, const std::optional<at::Tensor>& mask,
    const at::Tensor& weight_sum, std::optional<double> clip, double entropy_coef,
    bool entropy_grad);
std::tuple<at::Tensor, at::Tensor> clip_surrogate_bwd_cuda(
    const at::Tensor& grad_loss, const at::Tensor& ratio, const at::Tensor& advantages,
    const std::optional<at::Tensor>& factor, const std::optional<at::Tensor>& mask,
    const at::Tensor& weight_sum, std::optional<double> clip, double entropy_coef,
    bool entropy_grad);

// LayerNorm forward over the last dimension: (out, mean, rstd), mean and rstd shaped [*B, 1] as
// at::native_layer_norm returns them (its backward takes them).
std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_fwd_cpu(const at::Tensor& input,
                                                                  const at::Tensor& weight,
                                                                  const at::Tensor& bias,
                                                                  double eps);
std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_fwd_cuda(const at::Tensor& input,
                                                                   const at::Tensor& weight,
                                                                   const at::Tensor& bias,
                                                                   double eps);

// Names of the ops and of the custom classes (torch.classes.haml.*) registered by this build, for
// build_info().
std::vector<std::string> native_op_names();
std::vector<std::string> native_class_names();

}  // namespace haml
