// Native CPU LayerNorm forward: parallel over rows with at::parallel_for, each row normalised by
// the vectorised loops of layer_norm_kernel.h.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "haml/ops.h"
#include "layer_norm_checks.h"
#include "layer_norm_kernel.h"

namespace haml {

namespace {
// Elements per task: below this, starting a thread costs more than the rows it would normalise.
constexpr int64_t kLayerNormGrainElements = 16384;
}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_fwd_cpu(const at::Tensor& input,
                                                                  const at::Tensor& weight,
                                                                  const at::Tensor& bias,
                                                                  double eps) {
  auto call = detail::prepare_layer_norm(input, weight, bias, eps);
  if (call.rows == 0) return {call.out, call.mean, call.rstd};
  AT_DISPATCH_FLOATING_TYPES(call.input.scalar_type(), "haml_layer_norm_cpu", [&] {
    const auto* px = call.input.const_data_ptr<scalar_t>();
    const auto* pw = call.weight.const_data_ptr<scalar_t>();
    const auto* pb = call.bias.const_data_ptr<scalar_t>();
    auto* pmean = call.mean.mutable_data_ptr<scalar_t>();
    auto* prstd = call.rstd.mutable_data_ptr<scalar_t>();
    auto* pout = call.out.mutable_data_ptr<scalar_t>();
    const int64_t d = call.d;
    at::parallel_for(0, call.rows, std::max<int64_t>(1, kLayerNormGrainElements / d),
                     [&](int64_t begin, int64_t end) {
                       detail::layer_norm_row_range<scalar_t, /*KeepXhat=*/false>(
                           px, pw, pb, static_cast<scalar_t>(eps), pmean, prstd, nullptr, pout,
                           begin, end, d);
                     });
  });
  return {call.out, call.mean, call.rstd};
}

TORCH_LIBRARY_IMPL(haml, CPU, m) { m.impl("layer_norm_fwd", &layer_norm_fwd_cpu); }

}  // namespace haml
