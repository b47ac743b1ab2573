// Argument checks of the clip_surrogate ops, shared by the CPU kernels and the CUDA glue.
#pragma once

#include <cmath>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include "haml/checks.h"
#include "haml/optional_tensor.h"

namespace haml::detail {

inline void check_optional_like(const char* op, const char* name,
                                const std::optional<at::Tensor>& t, const at::Tensor& ref) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->scalar_type() == ref.scalar_type(), op, ": '", name, "' must have dtype ",
              ref.scalar_type(), ", got ", t->scalar_type());
  TORCH_CHECK(t->sizes() == ref.sizes(), op, ": '", name, "' must have the shape of 'logp_new' ",
              ref.sizes(), ", got ", t->sizes());
  TORCH_CHECK(t->device() == ref.device(), op, ": '", name, "' is on ", t->device(),
              " but 'logp_new' is on ", ref.device());
}

inline void check_clip(const char* op, std::optional<double> clip) {
  // inf is allowed: it clips nothing, like None. NaN fails the comparison.
  TORCH_CHECK(!clip.has_value() || *clip >= 0.0, op, ": 'clip' must be >= 0 or None, got ",
              clip.value_or(0.0));
}

inline void check_clip_surrogate_fwd_args(const at::Tensor& logp_new, const at::Tensor& logp_old,
                                          const at::Tensor& advantages,
                                          const std::optional<at::Tensor>& factor,
                                          const std::optional<at::Tensor>& mask,
                                          const std::optional<at::Tensor>& entropy,
                                          std::optional<double> clip, double entropy_coef) {
  constexpr const char* op = "clip_surrogate_fwd";
  HAML_CHECK_FLOATING("clip_surrogate_fwd", "logp_new", logp_new);
  check_optional_like(op, "logp_old", logp_old, logp_new);
  check_optional_like(op, "advantages", advantages, logp_new);
  check_optional_like(op, "factor", factor, logp_new);
  check_optional_like(op, "mask", mask, logp_new);
  check_optional_like(op, "entropy", entropy, logp_new);
  check_clip(op, clip);
  TORCH_CHECK(std::isfinite(entropy_coef), op, ": 'entropy_coef' must be finite, got ",
              entropy_coef);
}

inline void check_clip_surrogate_bwd_args(const at::Tensor& grad_loss, const at::Tensor& ratio,
                                          const at::Tensor& advantages,
                                          const std::optional<at::Tensor>& factor,
                                          const std::optional<at::Tensor>& mask,
                                          const at::Tensor& weight_sum,
                                          std::optional<double> clip) {
  constexpr const char* op = "clip_surrogate_bwd";
  HAML_CHECK_FLOATING("clip_surrogate_bwd", "ratio", ratio);
  TORCH_CHECK(grad_loss.numel() == 1 && weight_sum.numel() == 1, op,
              ": 'grad_loss' and 'weight_sum' must hold one element each");
  HAML_CHECK_DTYPE("clip_surrogate_bwd", "grad_loss", grad_loss, ratio.scalar_type());
  HAML_CHECK_DTYPE("clip_surrogate_bwd", "weight_sum", weight_sum, ratio.scalar_type());
  HAML_CHECK_SAME_DEVICE("clip_surrogate_bwd", "grad_loss", grad_loss, "ratio", ratio);
  HAML_CHECK_SAME_DEVICE("clip_surrogate_bwd", "weight_sum", weight_sum, "ratio", ratio);
  check_optional_like(op, "advantages", advantages, ratio);
  check_optional_like(op, "factor", factor, ratio);
  check_optional_like(op, "mask", mask, ratio);
  check_clip(op, clip);
}

// The checked, contiguous inputs of a forward call and its ratio output (allocated, not written):
// what the CPU kernel and the CUDA glue both start from.
struct SurrogateFwdCall {
  at::Tensor logp_new, logp_old, advantages, ratio;
  std::optional<at::Tensor> factor, mask, entropy;
};

inline SurrogateFwdCall prepare_clip_surrogate_fwd(const at::Tensor& logp_new,
                                                   const at::Tensor& logp_old,
                                                   const at::Tensor& advantages,
                                                   const std::optional<at::Tensor>& factor,
                                                   const std::optional<at::Tensor>& mask,
                                                   const std::optional<at::Tensor>& entropy,
                                                   std::optional<double> clip,
                                                   double entropy_coef) {
  check_clip_surrogate_fwd_args(logp_new, logp_old, advantages, factor, mask, entropy, clip,
                                entropy_coef);
  SurrogateFwdCall call;
  call.logp_new = logp_new.contiguous();
  call.logp_old = logp_old.contiguous();
  call.advantages = advantages.contiguous();
  call.factor = contiguous(factor);
  call.mask = contiguous(mask);
  call.entropy = contiguous(entropy);
  call.ratio = at::empty_like(call.logp_new);
  return call;
}

// Likewise for the backward: contiguous inputs and the two gradient outputs (grad_entropy empty
// when not asked for).
struct SurrogateBwdCall {
  at::Tensor grad_loss, ratio, advantages, weight_sum, grad_logp_new, grad_entropy;
  std::optional<at::Tensor> factor, mask;
};

inline SurrogateBwdCall prepare_clip_surrogate_bwd(const at::Tensor& grad_loss,
                                                   const at::Tensor& ratio,
                                                   const at::Tensor& advantages,
                                                   const std::optional<at::Tensor>& factor,
                                                   const std::optional<at::Tensor>& mask,
                                                   const at::Tensor& weight_sum,
                                                   std::optional<double> clip,
                                                   bool entropy_grad) {
  check_clip_surrogate_bwd_args(grad_loss, ratio, advantages, factor, mask, weight_sum, clip);
  SurrogateBwdCall call;
  call.grad_loss = grad_loss.contiguous();
  call.weight_sum = weight_sum.contiguous();
  call.ratio = ratio.contiguous();
  call.advantages = advantages.contiguous();
  call.factor = contiguous(factor);
  call.mask = contiguous(mask);
  call.grad_logp_new = at::empty_like(call.ratio);
  call.grad_entropy =
      entropy_grad ? at::empty_like(call.ratio) : at::empty({0}, call.ratio.options());
  return call;
}

}  // namespace haml::detail
