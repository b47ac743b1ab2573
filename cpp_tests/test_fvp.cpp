// The native Fisher operator on linear policies, where (F + λI)v has a closed form written here
// independently of the tangent/transposed passes, and its conjugate-gradient loop.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "fvp/fisher_operator.h"

namespace {

constexpr int64_t kN = 9, kObs = 4, kActions = 3;

struct Linear {
  at::Tensor log_std, weight, bias, obs;
};

Linear make_linear() {
  at::manual_seed(7);
  auto opts = at::TensorOptions().dtype(at::kDouble);
  return {0.3 * at::randn({kActions}, opts), at::randn({kActions, kObs}, opts),
          at::randn({kActions}, opts), at::randn({kN, kObs}, opts)};
}

// Split a flat vector over [log_std, W, b] (the Gaussian layout) into its blocks.
struct Blocks {
  at::Tensor log_std, weight, bias;
};
Blocks split(const at::Tensor& v, bool with_log_std) {
  int64_t off = 0;
  Blocks b;
  if (with_log_std) {
    b.log_std = v.narrow(0, off, kActions);
    off += kActions;
  }
  b.weight = v.narrow(0, off, kActions * kObs).view({kActions, kObs});
  off += kActions * kObs;
  b.bias = v.narrow(0, off, kActions);
  return b;
}

TEST(FisherOperator, LinearGaussianMatchesClosedForm) {
  const auto p = make_linear();
  const double damping = 0.1;
  haml::FisherOperator op(p.obs, {p.log_std, p.weight, p.bias}, std::nullopt, std::nullopt,
                          "gaussian", "tanh", false, false, 1e-5, damping);
  ASSERT_EQ(op.num_params(), kActions + kActions * kObs + kActions);
  const auto v = at::randn({op.num_params()}, at::kDouble);
  const auto got = split(op.apply(v), true);
  const auto dv = split(v, true);
  // J v on the means: dμ_n = dW h_n + db; M = diag(1/σ²); mean over the N samples.
  const auto inv_var = (-2 * p.log_std).exp();                    // [A]
  const auto u = (p.obs.matmul(dv.weight.t()) + dv.bias) * inv_var / kN;  // [N, A]
  EXPECT_TRUE(at::allclose(got.weight, u.t().matmul(p.obs) + damping * dv.weight, 1e-12, 1e-12));
  EXPECT_TRUE(at::allclose(got.bias, u.sum(0) + damping * dv.bias, 1e-12, 1e-12));
  // The log-std block: 2·I.
  EXPECT_TRUE(at::allclose(got.log_std, (2 + damping) * dv.log_std, 1e-12, 1e-12));
}

TEST(FisherOperator, LinearCategoricalWithMasksMatchesClosedForm) {
  const auto p = make_linear();
  auto available = at::rand({kN, kActions}, at::kDouble) < 0.6;
  available.select(1, 0).fill_(true);
  auto weights = at::rand({kN}, at::kDouble);
  weights[2] = 0.0;
  haml::FisherOperator op(p.obs, {p.weight, p.bias}, weights, available, "categorical", "relu",
                          false, false, 1e-5, 0.0);
  const auto v = at::randn({op.num_params()}, at::kDouble);
  const auto got = split(op.apply(v), false);
  const auto dv = split(v, false);
  const auto logits = p.obs.matmul(p.weight.t()) + p.bias;
  const auto probs = logits.masked_fill(available.logical_not(), -1e300).softmax(-1);  // [N, A]
  const auto dl = p.obs.matmul(dv.weight.t()) + dv.bias;                              // J v
  // (diag(p) − ppᵀ) dl, weighted by w_n / Σ w.
  auto u = probs * dl - probs * (probs * dl).sum(-1, true);
  u = u * (weights / weights.sum()).unsqueeze(1);
  EXPECT_TRUE(at::allclose(got.weight, u.t().matmul(p.obs), 1e-12, 1e-12));
  EXPECT_TRUE(at::allclose(got.bias, u.sum(0), 1e-12, 1e-12));
  // Unavailable actions have p = 0: their rows of the head receive nothing.
  const auto never = available.logical_not().all(0);
  for (int64_t a = 0; a < kActions; ++a) {
    if (never[a].item<bool>()) EXPECT_EQ(got.bias[a].item<double>(), 0.0);
  }
}

TEST(FisherOperator, ConjugateGradientSolvesTheDampedSystem) {
  const auto p = make_linear();
  haml::FisherOperator op(p.obs, {p.log_std, p.weight, p.bias}, std::nullopt, std::nullopt,
                          "gaussian", "tanh", false, false, 1e-5, 0.1);
  const auto b = at::randn({op.num_params()}, at::kDouble);
  const auto x = op.conjugate_gradient(b, 200, 1e-26);
  EXPECT_TRUE(at::allclose(op.apply(x), b, 1e-9, 1e-10));
  // Zero iterations, or b = 0, give x = 0.
  EXPECT_TRUE(op.conjugate_gradient(b, 0, 1e-10).eq(0).all().item<bool>());
  EXPECT_TRUE(op.conjugate_gradient(at::zeros_like(b), 10, 1e-10).eq(0).all().item<bool>());
}

TEST(FisherOperator, BadInputThrows) {
  const auto p = make_linear();
  EXPECT_THROW(haml::FisherOperator(p.obs, {p.weight, p.bias}, std::nullopt, std::nullopt,
                                    "beta", "tanh", false, false, 1e-5, 0.1),
               c10::Error);
  EXPECT_THROW(haml::FisherOperator(p.obs, {p.weight}, std::nullopt, std::nullopt,
                                    "categorical", "tanh", false, false, 1e-5, 0.1),
               c10::Error);
  EXPECT_THROW(haml::FisherOperator(p.obs, {p.weight, p.bias}, std::nullopt, std::nullopt,
                                    "categorical", "tanh", false, false, 1e-5, -1.0),
               c10::Error);
  haml::FisherOperator op(p.obs, {p.weight, p.bias}, std::nullopt, std::nullopt, "categorical",
                          "tanh", false, false, 1e-5, 0.1);
  EXPECT_THROW(op.apply(at::zeros({op.num_params() + 1}, at::kDouble)), c10::Error);
  EXPECT_THROW(op.apply(at::zeros({op.num_params()}, at::kFloat)), c10::Error);
  p.bias.add_(1.0);  // the operator's cached activations are now stale
  EXPECT_THROW(op.apply(at::zeros({op.num_params()}, at::kDouble)), c10::Error);
}

}  // namespace
