// Argument checks of the gae op, shared by its CPU kernel and its CUDA glue.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>

#include "haml/checks.h"

namespace haml::detail {

inline void check_gae_args(const at::Tensor& rewards, const at::Tensor& values,
                           const at::Tensor& next_values, const at::Tensor& terminated,
                           const at::Tensor& truncated) {
  TORCH_CHECK(rewards.dim() >= 1,
              "gae: 'rewards' must be time-major [T, *batch], got a 0-d tensor");
  HAML_CHECK_FLOATING("gae", "rewards", rewards);
  HAML_CHECK_DTYPE("gae", "values", values, rewards.scalar_type());
  HAML_CHECK_DTYPE("gae", "next_values", next_values, rewards.scalar_type());
  HAML_CHECK_DTYPE("gae", "terminated", terminated, at::kBool);
  HAML_CHECK_DTYPE("gae", "truncated", truncated, at::kBool);
  HAML_CHECK_SAME_SHAPE("gae", "values", values, "rewards", rewards);
  HAML_CHECK_SAME_SHAPE("gae", "next_values", next_values, "rewards", rewards);
  HAML_CHECK_SAME_SHAPE("gae", "terminated", terminated, "rewards", rewards);
  HAML_CHECK_SAME_SHAPE("gae", "truncated", truncated, "rewards", rewards);
  HAML_CHECK_SAME_DEVICE("gae", "values", values, "rewards", rewards);
  HAML_CHECK_SAME_DEVICE("gae", "next_values", next_values, "rewards", rewards);
  HAML_CHECK_SAME_DEVICE("gae", "terminated", terminated, "rewards", rewards);
  HAML_CHECK_SAME_DEVICE("gae", "truncated", truncated, "rewards", rewards);
}

// γ and λ in [0, 1], as haml.ops.gae requires; NaN fails both comparisons.
inline void check_gae_scalars(double gamma, double lam) {
  TORCH_CHECK(gamma >= 0.0 && gamma <= 1.0, "gae: 'gamma' must lie in [0, 1], got ", gamma);
  TORCH_CHECK(lam >= 0.0 && lam <= 1.0, "gae: 'lam' must lie in [0, 1], got ", lam);
}

// The checked, contiguous inputs of one gae call, its outputs (allocated, not yet written) and its
// sizes: what the CPU kernel and the CUDA glue both start from.
struct GaeCall {
  at::Tensor rewards, values, next_values, terminated, truncated;
  at::Tensor advantages, returns;
  int64_t T = 0, B = 0;
};

inline GaeCall prepare_gae(const at::Tensor& rewards, const at::Tensor& values,
                           const at::Tensor& next_values, const at::Tensor& terminated,
                           const at::Tensor& truncated, double gamma, double lam) {
  check_gae_args(rewards, values, next_values, terminated, truncated);
  check_gae_scalars(gamma, lam);
  GaeCall call;
  call.rewards = rewards.contiguous();
  call.values = values.contiguous();
  call.next_values = next_values.contiguous();
  call.terminated = terminated.contiguous();
  call.truncated = truncated.contiguous();
  call.advantages = at::empty_like(call.rewards);
  call.returns = at::empty_like(call.rewards);
  call.T = rewards.size(0);
  call.B = call.T == 0 ? 0 : rewards.numel() / call.T;
  return call;
}

}  // namespace haml::detail
