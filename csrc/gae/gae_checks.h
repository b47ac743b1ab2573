// Argument checks of the gae op, shared by its CPU kernel and its CUDA glue.
#pragma once

#include <ATen/core/Tensor.h>

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

}  // namespace haml::detail
