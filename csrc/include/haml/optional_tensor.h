// Helpers for the optional tensor arguments (Tensor? in a schema) of the kernels' entry points.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace haml::detail {

inline std::optional<at::Tensor> contiguous(const std::optional<at::Tensor>& t) {
  if (!t.has_value()) return std::nullopt;
  return t->contiguous();
}

// The data pointer, or null when the tensor is absent (the kernels read null as "not given").
template <typename scalar_t>
const scalar_t* optional_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->const_data_ptr<scalar_t>() : nullptr;
}

}  // namespace haml::detail
