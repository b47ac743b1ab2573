// Native CPU clipped surrogate: one fused pass for the loss and its statistics (a parallel
// reduction), one fused pass for the gradient.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <limits>
#include <type_traits>

#include "clip_surrogate_checks.h"
#include "clip_surrogate_math.h"
#include "haml/cpu_isa.h"
#include "haml/ops.h"
#include "haml/optional_tensor.h"
#include "haml/vec_exp.h"

namespace haml {

namespace {

constexpr int64_t kSurrogateGrain = 8192;
// Work is done in cache-sized blocks: first the ratios of a block, then its sums.
constexpr int64_t kBlock = 1024;
// Independent partial sums per block, so that the summing loop vectorises without reordering
// any one floating-point sum.
constexpr int kLanes = 16;

// Weighted sums of one pass, accumulated in double across blocks whatever the input dtype.
enum SumIndex { kObjective, kWeight, kEntropy, kClipped, kKl, kRatio, kNumSums };
using Sums = std::array<double, kNumSums>;

// r = exp(logp_new - logp_old) for one block.
template <typename scalar_t>
HAML_KERNEL_BODY void block_ratio(const scalar_t* __restrict logp_new,
                                  const scalar_t* __restrict logp_old, scalar_t* __restrict ratio,
                                  int64_t len) {
  for (int64_t i = 0; i < len; ++i) ratio[i] = detail::vec_exp(logp_new[i] - logp_old[i]);
}

// Adds one block's weighted terms to acc. A zero weight excludes a sample even where its terms
// are inf or NaN (dead agents, masked actions). The optional inputs are template flags and every
// per-sample choice is a select, so that the loop has no branch and vectorises. An unclipped
// objective is the clipped one with eps = inf (clamp(r, -inf, inf) = r), bit for bit.
template <typename scalar_t, bool HasFactor, bool HasMask, bool HasEntropy>
HAML_KERNEL_BODY void block_sums(const scalar_t* __restrict logp_new,
                                 const scalar_t* __restrict logp_old,
                                 const scalar_t* __restrict ratio,
                                 const scalar_t* __restrict advantages,
                                 const scalar_t* __restrict factor, const scalar_t* __restrict mask,
                                 const scalar_t* __restrict entropy, int64_t len, scalar_t clip,
                                 Sums& acc) {
  // First the weighted terms of the block, elementwise into small buffers (a plain vectorised
  // loop), then each buffer summed in kLanes independent partial sums.
  alignas(64) scalar_t terms[kNumSums][kBlock];
  for (int64_t j = 0; j < len; ++j) {
    scalar_t f = scalar_t(1), w = scalar_t(1);
    if constexpr (HasFactor) f = factor[j];
    if constexpr (HasMask) w = mask[j];
    const bool active = w != scalar_t(0);
    const auto e = detail::surrogate_terms<scalar_t>(logp_new[j] - logp_old[j], ratio[j],
                                                     advantages[j], f, true, clip);
    terms[kObjective][j] = active ? w * e.objective : scalar_t(0);
    terms[kWeight][j] = w;
    terms[kEntropy][j] = scalar_t(0);
    if constexpr (HasEntropy) terms[kEntropy][j] = active ? w * entropy[j] : scalar_t(0);
    terms[kClipped][j] = active ? w * e.clipped : scalar_t(0);
    terms[kKl][j] = active ? w * e.kl : scalar_t(0);
    terms[kRatio][j] = active ? w * e.ratio : scalar_t(0);
  }
  for (int k = 0; k < kNumSums; ++k) {
    scalar_t lanes[kLanes] = {};
    int64_t j = 0;
    for (; j + kLanes <= len; j += kLanes) {
      for (int lane = 0; lane < kLanes; ++lane) lanes[lane] += terms[k][j + lane];
    }
    double sum = 0.0;
    for (; j < len; ++j) sum += static_cast<double>(terms[k][j]);
    for (int lane = 0; lane < kLanes; ++lane) sum += static_cast<double>(lanes[lane]);
    acc[k] += sum;
  }
}

// The ratios and the sums of samples [begin, end), block by block.
template <typename scalar_t, bool HasFactor, bool HasMask, bool HasEntropy>
HAML_KERNEL_BODY void range_sums(const scalar_t* logp_new, const scalar_t* logp_old,
                                 scalar_t* ratio, const scalar_t* advantages,
                                 const scalar_t* factor, const scalar_t* mask,
                                 const scalar_t* entropy, int64_t begin, int64_t end, scalar_t clip,
                                 Sums& acc) {
  for (int64_t b = begin; b < end; b += kBlock) {
    const int64_t len = std::min(kBlock, end - b);
    block_ratio<scalar_t>(logp_new + b, logp_old + b, ratio + b, len);
    block_sums<scalar_t, HasFactor, HasMask, HasEntropy>(
        logp_new + b, logp_old + b, ratio + b, advantages + b, factor + (factor ? b : 0),
        mask + (mask ? b : 0), entropy + (entropy ? b : 0), len, clip, acc);
  }
}

// d loss / d logp_new (and / d entropy) for samples [0, len): scale = -g / W.
template <typename scalar_t, bool HasFactor, bool HasMask, bool HasEntropyGrad>
HAML_KERNEL_BODY void block_grads(const scalar_t* __restrict ratio,
                                  const scalar_t* __restrict advantages,
                                  const scalar_t* __restrict factor,
                                  const scalar_t* __restrict mask, int64_t len, scalar_t clip,
                                  scalar_t scale, scalar_t entropy_scale,
                                  scalar_t* __restrict grad_logp_new,
                                  scalar_t* __restrict grad_entropy) {
  for (int64_t i = 0; i < len; ++i) {
    scalar_t f = scalar_t(1), w = scalar_t(1);
    if constexpr (HasFactor) f = factor[i];
    if constexpr (HasMask) w = mask[i];
    const bool active = w != scalar_t(0);
    const scalar_t g =
        detail::surrogate_objective_grad<scalar_t>(ratio[i], advantages[i], f, true, clip);
    grad_logp_new[i] = active ? scale * w * g : scalar_t(0);
    if constexpr (HasEntropyGrad) grad_entropy[i] = active ? entropy_scale * w : scalar_t(0);
  }
}

// Calls fn(std::bool_constant<a>, std::bool_constant<b>, std::bool_constant<c>): runtime flags to
// template arguments, so that each combination of optional inputs gets its own branch-free loop.
template <typename Fn>
void with_flags(bool a, bool b, bool c, Fn&& fn) {
  const auto pick = [](bool x, auto&& next) {
    if (x) {
      next(std::true_type{});
    } else {
      next(std::false_type{});
    }
  };
  pick(a, [&](auto fa) { pick(b, [&](auto fb) { pick(c, [&](auto fc) { fn(fa, fb, fc); }); }); });
}

// eps of the kernels: the clip, or inf for the unclipped objective (see block_sums).
double kernel_clip(std::optional<double> clip) {
  return clip.value_or(std::numeric_limits<double>::infinity());
}

}  // namespace

SurrogateFwdOut clip_surrogate_fwd_cpu(const at::Tensor& logp_new_in, const at::Tensor& logp_old_in,
                                       const at::Tensor& advantages_in,
                                       const std::optional<at::Tensor>& factor_in,
                                       const std::optional<at::Tensor>& mask_in,
                                       const std::optional<at::Tensor>& entropy_in,
                                       std::optional<double> clip, double entropy_coef) {
  const auto call = detail::prepare_clip_surrogate_fwd(
      logp_new_in, logp_old_in, advantages_in, factor_in, mask_in, entropy_in, clip, entropy_coef);
  // References rather than a structured binding, which lambdas cannot capture before clang 16.
  const at::Tensor &logp_new = call.logp_new, &logp_old = call.logp_old,
                   &advantages = call.advantages, &ratio = call.ratio;
  const std::optional<at::Tensor>&factor = call.factor, &mask = call.mask, &entropy = call.entropy;
  const int64_t n = logp_new.numel();

  Sums total{};
  AT_DISPATCH_FLOATING_TYPES(logp_new.scalar_type(), "haml_clip_surrogate_fwd_cpu", [&] {
    const auto* p_new = logp_new.const_data_ptr<scalar_t>();
    const auto* p_old = logp_old.const_data_ptr<scalar_t>();
    const auto* p_adv = advantages.const_data_ptr<scalar_t>();
    const auto* p_factor = detail::optional_ptr<scalar_t>(factor);
    const auto* p_mask = detail::optional_ptr<scalar_t>(mask);
    const auto* p_ent = detail::optional_ptr<scalar_t>(entropy);
    auto* p_ratio = ratio.mutable_data_ptr<scalar_t>();
    const auto eps = static_cast<scalar_t>(kernel_clip(clip));
    total = at::parallel_reduce(
        0, n, kSurrogateGrain, Sums{},
        [&](int64_t begin, int64_t end, Sums acc) {
          with_flags(p_factor, p_mask, p_ent, [&](auto has_factor, auto has_mask, auto has_ent) {
            constexpr bool kFactor = decltype(has_factor)::value;
            constexpr bool kMask = decltype(has_mask)::value;
            constexpr bool kEntropy = decltype(has_ent)::value;
            cpu::dispatch(HAML_KERNEL(range_sums<scalar_t, kFactor, kMask, kEntropy>), p_new, p_old,
                          p_ratio, p_adv, p_factor, p_mask, p_ent, begin, end, eps, acc);
          });
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
    const at::Tensor& grad_loss_in, const at::Tensor& ratio_in, const at::Tensor& advantages_in,
    const std::optional<at::Tensor>& factor_in, const std::optional<at::Tensor>& mask_in,
    const at::Tensor& weight_sum_in, std::optional<double> clip, double entropy_coef,
    bool entropy_grad) {
  const auto call = detail::prepare_clip_surrogate_bwd(
      grad_loss_in, ratio_in, advantages_in, factor_in, mask_in, weight_sum_in, clip, entropy_grad);
  // References rather than a structured binding, which lambdas cannot capture before clang 16.
  const at::Tensor &grad_loss = call.grad_loss, &ratio = call.ratio, &advantages = call.advantages,
                   &weight_sum = call.weight_sum, &grad_logp_new = call.grad_logp_new,
                   &grad_entropy = call.grad_entropy;
  const std::optional<at::Tensor>&factor = call.factor, &mask = call.mask;
  const int64_t n = ratio.numel();

  AT_DISPATCH_FLOATING_TYPES(ratio.scalar_type(), "haml_clip_surrogate_bwd_cpu", [&] {
    const auto* p_ratio = ratio.const_data_ptr<scalar_t>();
    const auto* p_adv = advantages.const_data_ptr<scalar_t>();
    const auto* p_factor = detail::optional_ptr<scalar_t>(factor);
    const auto* p_mask = detail::optional_ptr<scalar_t>(mask);
    auto* g_new = grad_logp_new.mutable_data_ptr<scalar_t>();
    auto* g_ent = entropy_grad ? grad_entropy.mutable_data_ptr<scalar_t>() : nullptr;
    const auto eps = static_cast<scalar_t>(kernel_clip(clip));
    const double w_sum = weight_sum.item<double>();
    // loss = -(sum w obj + c sum w H) / W, so each sample's share of the incoming gradient is
    // -g w / W.
    const auto scale = static_cast<scalar_t>(
        w_sum != 0.0 ? -grad_loss.item<double>() / w_sum : 0.0);
    const auto ent_scale = static_cast<scalar_t>(entropy_coef) * scale;
    at::parallel_for(0, n, kSurrogateGrain, [&](int64_t begin, int64_t end) {
      with_flags(p_factor, p_mask, g_ent, [&](auto has_factor, auto has_mask, auto has_ent) {
        constexpr bool kFactor = decltype(has_factor)::value;
        constexpr bool kMask = decltype(has_mask)::value;
        constexpr bool kEntropyGrad = decltype(has_ent)::value;
        cpu::dispatch(HAML_KERNEL(block_grads<scalar_t, kFactor, kMask, kEntropyGrad>),
                      p_ratio + begin, p_adv + begin, p_factor + (p_factor ? begin : 0),
                      p_mask + (p_mask ? begin : 0), end - begin, eps, scale, ent_scale,
                      g_new + begin, g_ent + (g_ent ? begin : 0));
      });
    });
  });
  return {grad_logp_new, grad_entropy};
}

TORCH_LIBRARY_IMPL(haml, CPU, m) {
  m.impl("clip_surrogate_fwd", &clip_surrogate_fwd_cpu);
  m.impl("clip_surrogate_bwd", &clip_surrogate_bwd_cpu);
}

}  // namespace haml
