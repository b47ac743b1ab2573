// The native Fisher operator on linear policies, where (F + λI)v and Jᵀg have closed forms written
// here independently of the tangent/transposed passes; its conjugate-gradient loop; and, on deep
// LayerNorm policies, the CPU's blocked product against the ATen sequence.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <optional>
#include <vector>

#include "fvp/fisher_cpu.h"
#include "fvp/fisher_operator.h"
#include "test_support.h"

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

TEST(FisherOperator, OutputVjpIsTheTransposedJacobianOfTheHead) {
  const auto p = make_linear();
  haml::FisherOperator op(p.obs, {p.log_std, p.weight, p.bias}, std::nullopt, std::nullopt,
                          "gaussian", "tanh", false, false, 1e-5, 0.1);
  EXPECT_TRUE(at::allclose(op.head_output(), p.obs.matmul(p.weight.t()) + p.bias, 1e-12, 1e-12));
  const auto g = at::randn({kN, kActions}, at::kDouble);
  const auto got = split(op.output_vjp(g), true);
  // Σ_n g_n · (W o_n + b): gradient gᵀO on W, Σ_n g_n on b, nothing on the log-std.
  EXPECT_TRUE(at::allclose(got.weight, g.t().matmul(p.obs), 1e-12, 1e-12));
  EXPECT_TRUE(at::allclose(got.bias, g.sum(0), 1e-12, 1e-12));
  EXPECT_TRUE(got.log_std.eq(0).all().item<bool>());
  EXPECT_THROW(op.output_vjp(at::zeros({kN, kActions + 1}, at::kDouble)), c10::Error);
}

// The parameters of an MLP policy in the operator's layout: [log_std,] [input LN γ, β,]
// per hidden layer W, b [, LN γ, β], head W, b; random rather than initial values, so that γ ≠ 1
// and β ≠ 0 exercise every term of the LayerNorm passes and of the input-LayerNorm fold.
std::vector<at::Tensor> deep_parameters(bool gaussian, int64_t obs_dim, std::vector<int64_t> hidden,
                                        int64_t actions, bool input_norm, bool layer_norm) {
  auto opts = at::TensorOptions().dtype(at::kDouble);
  std::vector<at::Tensor> params;
  if (gaussian) params.push_back(0.3 * at::randn({actions}, opts));
  if (input_norm) {
    params.push_back(1 + 0.3 * at::randn({obs_dim}, opts));
    params.push_back(0.3 * at::randn({obs_dim}, opts));
  }
  int64_t width = obs_dim;
  for (int64_t out : hidden) {
    params.push_back(at::randn({out, width}, opts) / std::sqrt(static_cast<double>(width)));
    params.push_back(0.1 * at::randn({out}, opts));
    if (layer_norm) {
      params.push_back(1 + 0.3 * at::randn({out}, opts));
      params.push_back(0.3 * at::randn({out}, opts));
    }
    width = out;
  }
  params.push_back(at::randn({actions, width}, opts) / std::sqrt(static_cast<double>(width)));
  params.push_back(0.1 * at::randn({actions}, opts));
  return params;
}

TEST(FisherOperator, BlockedCpuProductMatchesTheAtenProduct) {
  at::manual_seed(11);
  using haml::fvp_cpu::kBlockRows;
  using haml::fvp_cpu::kGroups;
  // One partial block; a block and a half; more blocks than groups, with a partial last one
  // (groups of unequal block counts).
  const std::vector<int64_t> sizes = {5, kBlockRows + kBlockRows / 2,
                                      (kGroups + 3) * kBlockRows + 37};
  for (const int64_t n : sizes) {
    for (const bool gaussian : {true, false}) {
      for (const bool layer_norm : {true, false}) {
        for (const bool input_norm : {true, false}) {
          const auto obs = at::randn({n, 7}, at::kDouble);
          const auto params = deep_parameters(gaussian, 7, {19, 16}, 5, input_norm, layer_norm);
          const auto weights = at::rand({n}, at::kDouble) * (at::rand({n}, at::kDouble) < 0.8);
          std::optional<at::Tensor> available;
          if (!gaussian) {
            available = at::rand({n, 5}, at::kDouble) < 0.7;
            available->select(1, 2).fill_(true);
          }
          haml::FisherOperator op(obs, params, weights, available,
                                  gaussian ? "gaussian" : "categorical",
                                  layer_norm ? "tanh" : "relu", input_norm, layer_norm, 1e-5, 0.1);
          ASSERT_TRUE(op.blocked_cpu_product());
          const auto v = at::randn({op.num_params()}, at::kDouble);
          const auto g = at::randn({n, 5}, at::kDouble);
          const auto blocked_product = op.apply(v);
          const auto blocked_vjp = op.output_vjp(g);
          op.set_blocked_cpu_product(false);
          const auto aten_product = op.apply(v);
          const auto aten_vjp = op.output_vjp(g);
          EXPECT_TRUE(at::allclose(blocked_product, aten_product, 1e-11, 1e-13))
              << "n=" << n << " gaussian=" << gaussian << " layer_norm=" << layer_norm
              << " input_norm=" << input_norm;
          EXPECT_TRUE(at::allclose(blocked_vjp, aten_vjp, 1e-11, 1e-13));
          // The blocked product with its GEMMs through ATen (where torch exports no BLAS).
          op.set_blocked_cpu_product(true);
          haml::fvp_cpu::BlockedProduct::force_aten_gemm(true);
          const auto through_aten = op.apply(v);
          haml::fvp_cpu::BlockedProduct::force_aten_gemm(false);
          EXPECT_TRUE(at::allclose(through_aten, aten_product, 1e-11, 1e-13));
        }
      }
    }
  }
}

// A linear head (a value network, haml.models.VCritic): the same forward and transposed pass, the
// blocked one equal to the ATen sequence and to the closed form of a one-layer network; no metric,
// so products and conjugate gradient are refused.
TEST(FisherOperator, LinearHeadServesTheTransposedPassAndRefusesProducts) {
  at::manual_seed(12);
  const int64_t n = haml::fvp_cpu::kBlockRows + 41;
  for (const bool layer_norm : {true, false}) {
    for (const bool input_norm : {true, false}) {
      const auto obs = at::randn({n, 6}, at::kDouble);
      const auto params = deep_parameters(false, 6, {17, 9}, 1, input_norm, layer_norm);
      haml::FisherOperator op(obs, params, std::nullopt, std::nullopt, "linear", "relu",
                              input_norm, layer_norm, 1e-5, 0.0);
      ASSERT_EQ(op.head_output().sizes(), at::IntArrayRef({n, 1}));
      const auto g = at::randn({n, 1}, at::kDouble);
      const auto blocked = op.output_vjp(g);
      op.set_blocked_cpu_product(false);
      EXPECT_TRUE(at::allclose(blocked, op.output_vjp(g), 1e-11, 1e-13))
          << "layer_norm=" << layer_norm << " input_norm=" << input_norm;
      const auto v = at::zeros({op.num_params()}, at::kDouble);
      EXPECT_THROW(op.apply(v), c10::Error);
      EXPECT_THROW(op.conjugate_gradient(v, 3, 1e-10), c10::Error);
    }
  }
  // One Linear: V = x wᵀ + b, so Σ_n g_n ∇V_n = (gᵀx, Σ g).
  const auto x = at::randn({n, 4}, at::kDouble);
  const auto w = at::randn({1, 4}, at::kDouble);
  const auto b = at::randn({1}, at::kDouble);
  haml::FisherOperator op(x, {w, b}, std::nullopt, std::nullopt, "linear", "tanh", false, false,
                          1e-5, 0.0);
  EXPECT_TRUE(at::allclose(op.head_output(), at::addmm(b, x, w.t()), 1e-12, 1e-12));
  const auto g = at::randn({n, 1}, at::kDouble);
  const auto grad = op.output_vjp(g);
  EXPECT_TRUE(at::allclose(grad.narrow(0, 0, 4), g.t().mm(x).view({4}), 1e-12, 1e-12));
  EXPECT_TRUE(at::allclose(grad.narrow(0, 4, 1), g.sum(0), 1e-12, 1e-12));
  // An action mask has no meaning without a categorical head.
  EXPECT_THROW(haml::FisherOperator(x, {w, b}, std::nullopt, at::ones({n, 1}, at::kBool), "linear",
                                    "tanh", false, false, 1e-5, 0.0),
               c10::Error);
}

#if defined(__linux__)
TEST(FisherOperator, BlockedCpuProductCallsTorchsBlas) {
  // Linux torch wheels export their BLAS (MKL on x86-64, OpenBLAS on aarch64); if this fails,
  // the product silently runs its GEMMs through ATen, several times slower in small blocks.
  EXPECT_TRUE(haml::fvp_cpu::BlockedProduct::direct_blas());
}
#endif

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

// With every sample masked out the mean KL is 0 and the product is damping·v, in float32 too
// (Σ w = 0 must not become 0/0).
TEST(FisherOperator, AllSamplesMaskedOutGivesTheDampingInEveryDtype) {
  const auto p = make_linear();
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    const auto zero = at::zeros({kN}, at::TensorOptions().dtype(dtype));
    const auto none = at::zeros({kN}, at::TensorOptions().dtype(at::kBool));
    for (const auto& mask : {zero, none}) {
      for (const bool gaussian : {true, false}) {
        std::vector<at::Tensor> params = {p.weight.to(dtype), p.bias.to(dtype)};
        if (gaussian) params.insert(params.begin(), p.log_std.to(dtype));
        haml::FisherOperator op(p.obs.to(dtype), params, mask, std::nullopt,
                                gaussian ? "gaussian" : "categorical", "tanh", false, false, 1e-5,
                                0.25);
        const auto v = at::randn({op.num_params()}, at::TensorOptions().dtype(dtype));
        EXPECT_TRUE(at::equal(op.apply(v), 0.25 * v)) << dtype << " gaussian=" << gaussian;
        EXPECT_TRUE(at::allclose(op.conjugate_gradient(v, 5, 1e-10), 4.0 * v, 1e-5, 1e-6));
      }
    }
  }
}

// A sample of weight 0 takes no part, even with a non-finite observation.
TEST(FisherOperator, MaskedOutSampleWithNonFiniteObservationIsExcluded) {
  const auto p = make_linear();
  auto weights = at::rand({kN}, at::kDouble) + 0.5;
  weights[3] = 0.0;
  auto bad = p.obs.clone();
  bad[3][0] = std::nan("");
  bad[3][1] = INFINITY;
  haml::FisherOperator clean(p.obs, {p.log_std, p.weight, p.bias}, weights, std::nullopt,
                             "gaussian", "tanh", false, false, 1e-5, 0.1);
  haml::FisherOperator dirty(bad, {p.log_std, p.weight, p.bias}, weights, std::nullopt,
                             "gaussian", "tanh", false, false, 1e-5, 0.1);
  const auto v = at::randn({clean.num_params()}, at::kDouble);
  EXPECT_TRUE(at::allclose(dirty.apply(v), clean.apply(v), 1e-12, 1e-12));
}

// A categorical row with no available action is uniform whatever θ is: it adds nothing to F.
TEST(FisherOperator, RowWithNoAvailableActionAddsNothing) {
  const auto p = make_linear();
  auto available = at::ones({kN, kActions}, at::kBool);
  available[4].fill_(false);
  auto without = at::ones({kN}, at::kDouble);
  without[4] = 0.0;  // the same operator with row 4 masked out, rescaled to its weight sum
  haml::FisherOperator op(p.obs, {p.weight, p.bias}, std::nullopt, available, "categorical",
                          "relu", false, false, 1e-5, 0.0);
  haml::FisherOperator ref(p.obs, {p.weight, p.bias}, without, std::nullopt, "categorical",
                           "relu", false, false, 1e-5, 0.0);
  const auto v = at::randn({op.num_params()}, at::kDouble);
  const double scale = static_cast<double>(kN - 1) / kN;  // Σ w: N - 1 against N
  EXPECT_TRUE(at::allclose(op.apply(v), scale * ref.apply(v), 1e-12, 1e-12));
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
  haml::testing::expect_error_naming(
      [&] {
        haml::FisherOperator(p.obs.narrow(1, 0, kObs - 1), {p.weight, p.bias}, std::nullopt,
                             std::nullopt, "categorical", "tanh", false, false, 1e-5, 0.1);
      },
      "'obs'");
  haml::FisherOperator op(p.obs, {p.weight, p.bias}, std::nullopt, std::nullopt, "categorical",
                          "tanh", false, false, 1e-5, 0.1);
  EXPECT_THROW(op.apply(at::zeros({op.num_params() + 1}, at::kDouble)), c10::Error);
  EXPECT_THROW(op.apply(at::zeros({op.num_params()}, at::kFloat)), c10::Error);
  p.bias.add_(1.0);  // the operator's cached activations are now stale
  EXPECT_THROW(op.apply(at::zeros({op.num_params()}, at::kDouble)), c10::Error);
}

}  // namespace
