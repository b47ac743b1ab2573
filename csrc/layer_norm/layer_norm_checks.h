// Argument checks of the layer_norm op, shared by its CPU kernel and its CUDA glue.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <cmath>
#include <vector>

#include "haml/checks.h"

namespace haml::detail {

// The checked, contiguous inputs of one layer_norm call, its outputs (allocated, not yet written)
// and its sizes: `rows` rows of width `d` (the input's last dimension).
struct LayerNormCall {
  at::Tensor input, weight, bias;
  at::Tensor out, mean, rstd;
  int64_t rows = 0, d = 0;
};

inline LayerNormCall prepare_layer_norm(const at::Tensor& input, const at::Tensor& weight,
                                        const at::Tensor& bias, double eps) {
  TORCH_CHECK(input.dim() >= 1, "layer_norm: 'input' must have at least one dimension (the one "
              "normalised), got a 0-d tensor");
  HAML_CHECK_FLOATING("layer_norm", "input", input);
  HAML_CHECK_DTYPE("layer_norm", "weight", weight, input.scalar_type());
  HAML_CHECK_DTYPE("layer_norm", "bias", bias, input.scalar_type());
  const int64_t d = input.size(-1);
  TORCH_CHECK(d >= 1, "layer_norm: 'input' has an empty last dimension (shape ", input.sizes(),
              "); the normalised dimension needs at least one entry");
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == d, "layer_norm: 'weight' must be [", d,
              "] (the last dimension of 'input'), got ", weight.sizes());
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == d, "layer_norm: 'bias' must be [", d,
              "] (the last dimension of 'input'), got ", bias.sizes());
  HAML_CHECK_SAME_DEVICE("layer_norm", "weight", weight, "input", input);
  HAML_CHECK_SAME_DEVICE("layer_norm", "bias", bias, "input", input);
  // NaN fails the comparison.
  TORCH_CHECK(eps >= 0.0 && std::isfinite(eps), "layer_norm: 'eps' must be finite and >= 0, got ",
              eps);
  LayerNormCall call;
  call.input = input.contiguous();
  call.weight = weight.contiguous();
  call.bias = bias.contiguous();
  call.d = d;
  call.rows = input.numel() / d;
  call.out = at::empty_like(call.input);
  // mean and 1/σ shaped [*B, 1], as at::native_layer_norm returns them, so that its backward
  // kernel takes them as they are.
  std::vector<int64_t> stat_shape(input.sizes().begin(), input.sizes().end());
  stat_shape.back() = 1;
  call.mean = at::empty(stat_shape, call.input.options());
  call.rstd = at::empty(stat_shape, call.input.options());
  return call;
}

}  // namespace haml::detail
