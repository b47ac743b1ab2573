// Native CPU clipped surrogate: one fused pass for the loss and its statistics (a parallel
// reduction), one fused pass for the gradient.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include <array>

#include "clip_surrogate_checks.h"
#include "clip_surrogate_math.h"
#include "haml/ops.h"

namespace haml {

namespace {

constexpr int64_t kSurrogateGrain = 8192;

// Weighted sums of one pass, accumulated in double whatever the input dtype.
enum SumIndex { kObjective, kWeight, kEntropy, kClipped, kKl, kRatio, kNumSums };
using Sums = std::array<double, kNumSums>;

// A pointer that is null when the optional tensor is absent; contiguous copies are kept alive by
// the caller.
template <typename scalar_t>
const scalar_t* optional_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->const_data_ptr<scalar_t>() : nullptr;
}

std::optional<at::Tensor> contiguous(const std::optional<at::Tensor>& t) {
  if (!t.has_value()) return std::nullopt;
  return t->contiguous();
}

}  // namespace

SurrogateFwdOut clip_surrogate_fwd_cpu(const at::Tensor& logp_new_in, const at::Tensor& logp_old_in,
                                       const at::Tensor& advantages_in,
                                       const std::optional<at::Tensor>& factor_in,
                                       const std::optional<at::Tensor>& mask_in,
                                       const std::optional<at::Tensor>& entropy_in,
                                       std::optional<double> clip, double entropy_coef) {
  detail::check_clip_surrogate_fwd_args(logp_new_in, logp_old_in, advantages_in, factor_in,
                                        mask_in, entropy_in, clip);
  const auto logp_new = logp_new_in.contiguous();
  const auto logp_old = logp_old_in.contiguous();
  const auto advantages = advantages_in.contiguous();
  const auto factor = contiguous(factor_in);
  const auto mask = contiguous(mask_in);
  const auto entropy = contiguous(entropy_in);
  auto ratio = at::empty_like(logp_new);
  const int64_t n = logp_new.numel();
  const bool clipped = clip.has_value();

  Sums total{};
  AT_DISPATCH_FLOATING_TYPES(logp_new.scalar_type(), "haml_clip_surrogate_fwd_cpu", [&] {
    const auto* p_new = logp_new.const_data_ptr<scalar_t>();
    const auto* p_old = logp_old.const_data_ptr<scalar_t>();
    const auto* p_adv = advantages.const_data_ptr<scalar_t>();
    const auto* p_factor = optional_ptr<scalar_t>(factor);
    const auto* p_mask = optional_ptr<scalar_t>(mask);
    const auto* p_ent = optional_ptr<scalar_t>(entropy);
    auto* p_ratio = ratio.mutable_data_ptr<scalar_t>();
    const auto eps = static_cast<scalar_t>(clip.value_or(0.0));
    total = at::parallel_reduce(
        0, n, kSurrogateGrain, Sums{},
        [&](int64_t begin, int64_t end, Sums acc) {
          for (int64_t i = begin; i < end; ++i) {
            const scalar_t f = p_factor ? p_factor[i] : scalar_t(1);
            const auto e = detail::surrogate_element<scalar_t>(p_new[i], p_old[i], p_adv[i], f,
                                                               clipped, eps);
            p_ratio[i] = e.ratio;
            const double w = p_mask ? static_cast<double>(p_mask[i]) : 1.0;
            // A zero weight excludes the sample, even where its terms are inf or NaN (dead
            // agents, masked actions).
            if (w == 0.0) continue;
            acc[kObjective] += w * e.objective;
            acc[kWeight] += w;
            if (p_ent) acc[kEntropy] += w * p_ent[i];
            acc[kClipped] += w * e.clipped;
            acc[kKl] += w * e.kl;
            acc[kRatio] += w * e.ratio;
          }
          return acc;
        },
        [](Sums a, const Sums& b) {
          for (int k = 0; k < kNumSums; ++k) a[k] += b[k];
          return a;
        });
  });

  // No active sample: every mean is 0 rather than 0/0.
  const double denom = total[kWeight] != 0.0 ? total[kWeight] : 1.0;
  const auto options = logp_new.options();
  auto loss = at::scalar_tensor(-(total[kObjective] + entropy_coef * total[kEntropy]) / denom,
                                options);
  auto clip_fraction = at::scalar_tensor(total[kClipped] / denom, options);
  auto approx_kl = at::scalar_tensor(total[kKl] / denom, options);
  auto ratio_mean = at::scalar_tensor(total[kRatio] / denom, options);
  auto weight_sum = at::scalar_tensor(total[kWeight], options);
  return {loss, clip_fraction, approx_kl, ratio_mean, weight_sum, ratio};
}

std::tuple<at::Tensor, at::Tensor> clip_surrogate_bwd_cpu(
    const at::Tensor& grad_loss, const at::Tensor& ratio_in, const at::Tensor& advantages_in,
    const std::optional<at::Tensor>& factor_in, const std::optional<at::Tensor>& mask_in,
    const at::Tensor& weight_sum, std::optional<double> clip, double entropy_coef,
    bool entropy_grad) {
  detail::check_clip_surrogate_bwd_args(grad_loss, ratio_in, advantages_in, factor_in, mask_in,
                                        weight_sum, clip);
  const auto ratio = ratio_in.contiguous();
  const auto advantages = advantages_in.contiguous();
  const auto factor = contiguous(factor_in);
  const auto mask = contiguous(mask_in);
  auto grad_logp_new = at::empty_like(ratio);
  auto grad_entropy = entropy_grad ? at::empty_like(ratio) : at::empty({0}, ratio.options());
  const int64_t n = ratio.numel();
  const bool clipped = clip.has_value();

  AT_DISPATCH_FLOATING_TYPES(ratio.scalar_type(), "haml_clip_surrogate_bwd_cpu", [&] {
    const auto* p_ratio = ratio.const_data_ptr<scalar_t>();
    const auto* p_adv = advantages.const_data_ptr<scalar_t>();
    const auto* p_factor = optional_ptr<scalar_t>(factor);
    const auto* p_mask = optional_ptr<scalar_t>(mask);
    auto* g_new = grad_logp_new.mutable_data_ptr<scalar_t>();
    auto* g_ent = entropy_grad ? grad_entropy.mutable_data_ptr<scalar_t>() : nullptr;
    const auto eps = static_cast<scalar_t>(clip.value_or(0.0));
    const double w_sum = weight_sum.item<double>();
    // loss = -(sum w obj + c sum w H) / W, so each sample's share of the incoming gradient is
    // -g w / W.
    const auto scale = static_cast<scalar_t>(
        w_sum != 0.0 ? -grad_loss.item<double>() / w_sum : 0.0);
    const auto ent_scale = static_cast<scalar_t>(entropy_coef) * scale;
    at::parallel_for(0, n, kSurrogateGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t w = p_mask ? p_mask[i] : scalar_t(1);
        if (w == scalar_t(0)) {
          g_new[i] = scalar_t(0);
          if (g_ent) g_ent[i] = scalar_t(0);
          continue;
        }
        const scalar_t f = p_factor ? p_factor[i] : scalar_t(1);
        g_new[i] = scale * w *
                   detail::surrogate_objective_grad<scalar_t>(p_ratio[i], p_adv[i], f, clipped,
                                                              eps);
        if (g_ent) g_ent[i] = ent_scale * w;
      }
    });
  });
  return {grad_logp_new, grad_entropy};
}

TORCH_LIBRARY_IMPL(haml, CPU, m) {
  m.impl("clip_surrogate_fwd", &clip_surrogate_fwd_cpu);
  m.impl("clip_surrogate_bwd", &clip_surrogate_bwd_cpu);
}

}  // namespace haml
