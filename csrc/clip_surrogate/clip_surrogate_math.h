// Per-element math of the clipped surrogate, shared by the CPU kernel, the CUDA kernel and the
// C++ tests. No ATen, no CUDA runtime. Notation of [HATRPO], eq. (11) (HAPPO) and of the HAA2C
// objective in [HAML]: r = pi_new / pi_old, M the sequential factor, A the advantage.
#pragma once

#include <cmath>

#include "haml/host_device.h"

namespace haml::detail {

template <typename scalar_t>
struct SurrogateElement {
  scalar_t objective;  // min(r M A, clip(r, 1 - eps, 1 + eps) M A), or r M A unclipped
  scalar_t ratio;      // r = exp(logp_new - logp_old)
  scalar_t clipped;    // 1 if |r - 1| > eps (a clipped sample), else 0
  scalar_t kl;         // (r - 1) - log r: unbiased, non-negative estimate of KL(pi_old || pi_new)
};

template <typename scalar_t>
HAML_HOST_DEVICE scalar_t clamp_ratio(scalar_t ratio, scalar_t clip) {
  const scalar_t lo = scalar_t(1) - clip;
  const scalar_t hi = scalar_t(1) + clip;
  // Written so that a NaN ratio stays NaN, as torch.clamp does.
  return ratio < lo ? lo : (ratio > hi ? hi : ratio);
}

// The terms of one sample given its log-ratio and ratio r = exp(log_ratio).
template <typename scalar_t>
HAML_HOST_DEVICE SurrogateElement<scalar_t> surrogate_terms(scalar_t log_ratio, scalar_t ratio,
                                                            scalar_t advantage, scalar_t factor,
                                                            bool clipped, scalar_t clip) {
  using std::fabs;
  SurrogateElement<scalar_t> e;
  e.ratio = ratio;
  const scalar_t weighted_adv = factor * advantage;  // M * A
  const scalar_t surr1 = ratio * weighted_adv;
  if (clipped) {
    const scalar_t surr2 = clamp_ratio(ratio, clip) * weighted_adv;
    // min that returns NaN when surr1 is NaN, as torch.min does.
    e.objective = surr2 < surr1 ? surr2 : surr1;
    e.clipped = fabs(ratio - scalar_t(1)) > clip ? scalar_t(1) : scalar_t(0);
  } else {
    e.objective = surr1;
    e.clipped = scalar_t(0);
  }
  e.kl = (ratio - scalar_t(1)) - log_ratio;
  return e;
}

template <typename scalar_t>
HAML_HOST_DEVICE SurrogateElement<scalar_t> surrogate_element(scalar_t logp_new,
                                                              scalar_t logp_old,
                                                              scalar_t advantage,
                                                              scalar_t factor, bool clipped,
                                                              scalar_t clip) {
  using std::exp;
  const scalar_t log_ratio = logp_new - logp_old;
  return surrogate_terms(log_ratio, exp(log_ratio), advantage, factor, clipped, clip);
}

// d objective / d logp_new. Through the min, the unclipped branch carries the gradient when it is
// the smaller one; inside [1 - eps, 1 + eps] both branches are equal and the clamp passes the
// gradient, so the sum of autograd's two halves is r M A there too.
template <typename scalar_t>
HAML_HOST_DEVICE scalar_t surrogate_objective_grad(scalar_t ratio, scalar_t advantage,
                                                   scalar_t factor, bool clipped,
                                                   scalar_t clip) {
  const scalar_t weighted_adv = factor * advantage;
  const scalar_t surr1 = ratio * weighted_adv;
  if (!clipped) return surr1;
  const scalar_t surr2 = clamp_ratio(ratio, clip) * weighted_adv;
  const bool inside = ratio >= scalar_t(1) - clip && ratio <= scalar_t(1) + clip;
  // A NaN ratio keeps its NaN gradient (ratio != ratio), as autograd through the reference does.
  return (inside || surr1 < surr2 || ratio != ratio) ? surr1 : scalar_t(0);
}

}  // namespace haml::detail
