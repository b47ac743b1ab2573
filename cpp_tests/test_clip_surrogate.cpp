// The clipped surrogate in C++: the header-only per-sample math (surrogate_terms,
// surrogate_element, surrogate_objective_grad, clamp_ratio, and the vectorisable exp it uses) on
// hand-computed tables, and the registered ops haml::clip_surrogate_fwd / _bwd through the
// dispatcher and the CPU entry points, including bad input.
//
// Notation: r = exp(logp_new - logp_old), MA = factor * advantage, eps = clip = 0.2, so the clip
// range is [0.8, 1.2]. The objective of one sample is min(r MA, clip(r) MA):
//   MA > 0: r MA below 1.2, 1.2 MA above (gradient r MA, then 0)
//   MA < 0: 0.8 MA below 0.8, r MA above (gradient 0, then r MA)
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "clip_surrogate/clip_surrogate_math.h"
#include "haml/ops.h"
#include "test_support.h"
#include "haml/vec_exp.h"

namespace {

using haml::detail::clamp_ratio;
using haml::detail::surrogate_element;
using haml::detail::surrogate_objective_grad;
using haml::detail::surrogate_terms;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
// KL estimates (r - 1) - log r of the table's ratios.
const double kKlHalf = -0.5 + std::log(2.0);          // r = 0.5: 0.19314718...
const double kKlThreeHalves = 0.5 - std::log(1.5);    // r = 1.5: 0.09453489...

// ---------------------------------------------------------------------------------------------
// Per-sample math

struct Row {
  double ratio, weighted_adv, objective, grad, clipped;
};

// eps = 0.2; every product below is exact, so the table compares with ==.
const std::vector<Row> kClippedTable = {
    // r,   MA,   objective                        gradient  clipped
    {0.5, +1.0, 0.5, 0.5, 1},    // min(0.5, 0.8) = 0.5: unclipped branch smaller, passes r MA
    {0.5, -1.0, -0.8, 0.0, 1},   // min(-0.5, -0.8) = -0.8: clipped, no gradient
    {1.0, +1.0, 1.0, 1.0, 0},    // inside the range: both equal, gradient r MA
    {1.0, -1.0, -1.0, -1.0, 0},  //
    {1.5, +1.0, 1.2, 0.0, 1},    // min(1.5, 1.2) = 1.2: clipped, no gradient
    {1.5, -1.0, -1.5, -1.5, 1},  // min(-1.5, -1.2) = -1.5: unclipped, gradient r MA
    {4.0, -0.5, -2.0, -2.0, 1},  // min(-2, -0.6) = -2
    {0.25, 2.0, 0.5, 0.5, 1},    // min(0.5, 1.6) = 0.5
};

TEST(SurrogateMath, TermsTableClipped) {
  for (const auto& row : kClippedTable) {
    // factor 0.5 and advantage 2 MA: the weighted advantage is MA.
    const auto e = surrogate_terms<double>(std::log(row.ratio), row.ratio, 2.0 * row.weighted_adv,
                                           0.5, true, 0.2);
    EXPECT_EQ(e.objective, row.objective) << "r = " << row.ratio << ", MA = " << row.weighted_adv;
    EXPECT_EQ(e.ratio, row.ratio);
    EXPECT_EQ(e.clipped, row.clipped) << "r = " << row.ratio;
    EXPECT_NEAR(e.kl, (row.ratio - 1.0) - std::log(row.ratio), 1e-15);
  }
}

TEST(SurrogateMath, TermsUnclipped) {
  // HAA2C: the objective is r MA, never clipped, whatever the ratio.
  for (const auto& row : kClippedTable) {
    const auto e =
        surrogate_terms<double>(std::log(row.ratio), row.ratio, row.weighted_adv, 1.0, false, 0.2);
    EXPECT_EQ(e.objective, row.ratio * row.weighted_adv);
    EXPECT_EQ(e.clipped, 0.0);
  }
}

TEST(SurrogateMath, ElementFromLogProbabilities) {
  // logp_old = -1.2, logp_new = -1.2 + log r: the ratio comes from exp, exact to a few ulps.
  for (const auto& row : kClippedTable) {
    const auto e = surrogate_element<double>(-1.2 + std::log(row.ratio), -1.2, row.weighted_adv,
                                             1.0, true, 0.2);
    EXPECT_NEAR(e.ratio, row.ratio, 1e-15 * row.ratio);
    EXPECT_NEAR(e.objective, row.objective, 1e-14);
    EXPECT_EQ(e.clipped, row.clipped);
  }
  const auto half = surrogate_element<double>(std::log(0.5), 0.0, 1.0, 1.0, true, 0.2);
  EXPECT_NEAR(half.kl, kKlHalf, 1e-15);
  const auto f = surrogate_element<float>(std::log(1.5f), 0.0f, -1.0f, 1.0f, true, 0.2f);
  EXPECT_NEAR(f.objective, -1.5f, 1e-6f);
  EXPECT_NEAR(f.kl, static_cast<float>(kKlThreeHalves), 1e-6f);
}

TEST(SurrogateMath, ObjectiveGradTable) {
  for (const auto& row : kClippedTable) {
    EXPECT_EQ(surrogate_objective_grad<double>(row.ratio, row.weighted_adv, 1.0, true, 0.2),
              row.grad)
        << "r = " << row.ratio << ", MA = " << row.weighted_adv;
    EXPECT_EQ(surrogate_objective_grad<double>(row.ratio, row.weighted_adv, 1.0, false, 0.2),
              row.ratio * row.weighted_adv);
  }
  // The factor scales the gradient: r * M * A.
  EXPECT_EQ(surrogate_objective_grad<double>(1.0, 3.0, 0.5, true, 0.2), 1.5);
}

// On the edges of the range torch.clamp passes the gradient and torch.min splits it between two
// equal branches, so autograd's total is r MA there: the kernel must agree.
TEST(SurrogateMath, ObjectiveGradAtTheEdges) {
  const double lo = 1.0 - 0.2, hi = 1.0 + 0.2;
  EXPECT_EQ(surrogate_objective_grad<double>(hi, 1.0, 1.0, true, 0.2), hi);
  EXPECT_EQ(surrogate_objective_grad<double>(lo, -1.0, 1.0, true, 0.2), -lo);
}

TEST(SurrogateMath, ClampRatio) {
  EXPECT_EQ(clamp_ratio<double>(0.5, 0.2), 0.8);
  EXPECT_EQ(clamp_ratio<double>(1.5, 0.2), 1.2);
  EXPECT_EQ(clamp_ratio<double>(1.1, 0.2), 1.1);
  EXPECT_EQ(clamp_ratio<double>(kInf, 0.2), 1.2);
  EXPECT_EQ(clamp_ratio<double>(0.0, 0.2), 0.8);
  EXPECT_TRUE(std::isnan(clamp_ratio<double>(kNaN, 0.2)));
}

TEST(SurrogateMath, NaNPropagates) {
  // As torch.min and torch.clamp do: a NaN log-probability gives a NaN objective (it is the
  // mask's job, not the math's, to exclude it).
  const auto e = surrogate_element<double>(kNaN, 0.0, 1.0, 1.0, true, 0.2);
  EXPECT_TRUE(std::isnan(e.ratio));
  EXPECT_TRUE(std::isnan(e.objective));
  const auto u = surrogate_element<double>(0.0, 0.0, kNaN, 1.0, true, 0.2);
  EXPECT_TRUE(std::isnan(u.objective));
}

// ---------------------------------------------------------------------------------------------
// The exp behind the ratio: vec_exp documents the library exp's results (within a couple of ulps)
// for every argument whose result is a normal number, inf above ln(max), 0 below ln(min), NaN for
// NaN.

template <typename scalar_t>
void check_vec_exp_range(scalar_t lo, scalar_t hi, double ulps) {
  using haml::detail::vec_exp;
  const int n = 200001;
  const double eps = std::numeric_limits<scalar_t>::epsilon();
  int failures = 0;
  for (int i = 0; i < n; ++i) {
    const scalar_t x = lo + (hi - lo) * static_cast<scalar_t>(i) / static_cast<scalar_t>(n - 1);
    const double want = std::exp(static_cast<long double>(x));
    const double got = vec_exp<scalar_t>(x);
    if (!(std::fabs(got - want) <= ulps * eps * want) && failures++ < 5) {
      ADD_FAILURE() << "vec_exp(" << x << ") = " << got << ", exp = " << want;
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST(VecExp, FloatWholeNormalRange) {
  // ln(FLT_MIN) = -87.3365..., ln(FLT_MAX) = 88.7228...
  check_vec_exp_range<float>(-87.336f, 88.722f, 2.0);
}

TEST(VecExp, DoubleWholeNormalRange) {
  // ln(DBL_MIN) = -708.3964..., ln(DBL_MAX) = 709.7827...
  check_vec_exp_range<double>(-708.396, 709.782, 2.0);
}

TEST(VecExp, OutsideTheRange) {
  using haml::detail::vec_exp;
  EXPECT_EQ(vec_exp<float>(89.0f), std::numeric_limits<float>::infinity());
  EXPECT_EQ(vec_exp<float>(-1e4f), 0.0f);
  EXPECT_EQ(vec_exp<double>(kInf), kInf);
  EXPECT_EQ(vec_exp<double>(-kInf), 0.0);
  EXPECT_EQ(vec_exp<double>(710.0), kInf);
  EXPECT_EQ(vec_exp<double>(0.0), 1.0);
  EXPECT_TRUE(std::isnan(vec_exp<double>(kNaN)));
  EXPECT_TRUE(std::isnan(vec_exp<float>(std::numeric_limits<float>::quiet_NaN())));
}

// ---------------------------------------------------------------------------------------------
// The registered ops

using FwdFn = haml::SurrogateFwdOut(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    const std::optional<at::Tensor>&,
                                    const std::optional<at::Tensor>&,
                                    const std::optional<at::Tensor>&, std::optional<double>,
                                    double);
using BwdFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                 const at::Tensor&,
                                                 const std::optional<at::Tensor>&,
                                                 const std::optional<at::Tensor>&,
                                                 const at::Tensor&, std::optional<double>, double,
                                                 bool);

c10::TypedOperatorHandle<FwdFn> fwd_op() {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow("haml::clip_surrogate_fwd", "")
      .typed<FwdFn>();
}

c10::TypedOperatorHandle<BwdFn> bwd_op() {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow("haml::clip_surrogate_bwd", "")
      .typed<BwdFn>();
}

// Four samples, eps = 0.2, factor 0.5 and advantages +-2 (MA = +-1), entropy coefficient 0.5:
//   r     = [0.5, 1.0, 1.5, (masked)]     MA = [+1, -1, +1, -1]     mask = [1, 1, 1, 0]
//   objectives: 0.5, -1, 1.2                   (sum 0.7, weight sum W = 3)
//   entropy over active samples: 0.1 + 0.2 + 0.3 = 0.6
//   loss          = -(0.7 + 0.5 * 0.6) / 3 = -1/3
//   clip_fraction = 2/3 (r = 0.5 and r = 1.5)
//   approx_kl     = (kl(0.5) + 0 + kl(1.5)) / 3 = ln(4/3) / 3
//   ratio_mean    = (0.5 + 1 + 1.5) / 3 = 1
// The masked sample holds a NaN log-probability and an infinite entropy: it must change nothing.
// Backward with grad_loss = 2: each active sample gets -2 w grad_i / W
//   grad_logp_new = [-2 * 0.5 / 3, -2 * -1 / 3, 0, 0] = [-1/3, 2/3, 0, 0]
//   grad_entropy  = -2 * 0.5 * w / 3 = [-1/3, -1/3, -1/3, 0]
struct SurrogateTable {
  at::Tensor logp_new, logp_old, advantages, factor, mask, entropy;
};

SurrogateTable surrogate_table(at::ScalarType dtype) {
  auto t = [&](std::vector<double> x) { return at::tensor(x, at::kDouble).to(dtype); };
  auto logp_old = t({-1.0, -2.0, -0.5, -1.0});
  auto logp_new = logp_old + t({std::log(0.5), 0.0, std::log(1.5), 0.0});
  logp_new.index_put_({3}, kNaN);
  return {logp_new,
          logp_old,
          t({2.0, -2.0, 2.0, -2.0}),
          t({0.5, 0.5, 0.5, 0.5}),
          t({1.0, 1.0, 1.0, 0.0}),
          t({0.1, 0.2, 0.3, kInf})};
}

TEST(ClipSurrogateOp, ForwardHandComputed) {
  for (auto dtype : {at::kDouble, at::kFloat}) {
    const double tol = dtype == at::kDouble ? 1e-15 : 1e-6;
    const auto x = surrogate_table(dtype);
    auto [loss, clip_fraction, approx_kl, ratio_mean, weight_sum, ratio] = fwd_op().call(
        x.logp_new, x.logp_old, x.advantages, x.factor, x.mask, x.entropy, 0.2, 0.5);
    EXPECT_EQ(loss.dim(), 0);
    EXPECT_EQ(loss.scalar_type(), dtype);
    EXPECT_NEAR(loss.item<double>(), -1.0 / 3.0, tol);
    EXPECT_NEAR(clip_fraction.item<double>(), 2.0 / 3.0, tol);
    EXPECT_NEAR(approx_kl.item<double>(), std::log(4.0 / 3.0) / 3.0, tol);
    EXPECT_NEAR(ratio_mean.item<double>(), 1.0, tol);
    EXPECT_EQ(weight_sum.item<double>(), 3.0);
    ASSERT_EQ(ratio.sizes(), x.logp_new.sizes());
    const auto r = ratio.to(at::kDouble);
    EXPECT_NEAR(r[0].item<double>(), 0.5, tol);
    EXPECT_NEAR(r[1].item<double>(), 1.0, tol);
    EXPECT_NEAR(r[2].item<double>(), 1.5, tol);
  }
}

TEST(ClipSurrogateOp, ForwardUnclipped) {
  // clip = None: objectives r MA = 0.5, -1, 1.5 (sum 1); loss = -(1 + 0.5 * 0.6) / 3 = -13/30.
  const auto x = surrogate_table(at::kDouble);
  auto out = haml::clip_surrogate_fwd_cpu(x.logp_new, x.logp_old, x.advantages, x.factor, x.mask,
                                          x.entropy, std::nullopt, 0.5);
  EXPECT_NEAR(std::get<0>(out).item<double>(), -13.0 / 30.0, 1e-15);
  EXPECT_EQ(std::get<1>(out).item<double>(), 0.0);
}

TEST(ClipSurrogateOp, BackwardHandComputed) {
  for (auto dtype : {at::kDouble, at::kFloat}) {
    const double tol = dtype == at::kDouble ? 1e-15 : 1e-6;
    const auto x = surrogate_table(dtype);
    const auto fwd = haml::clip_surrogate_fwd_cpu(x.logp_new, x.logp_old, x.advantages, x.factor,
                                                  x.mask, x.entropy, 0.2, 0.5);
    const auto grad_loss = at::scalar_tensor(2.0, at::TensorOptions().dtype(dtype));
    auto [g_new, g_ent] = bwd_op().call(grad_loss, std::get<5>(fwd), x.advantages, x.factor,
                                        x.mask, std::get<4>(fwd), 0.2, 0.5, true);
    const std::vector<double> want_new{-1.0 / 3.0, 2.0 / 3.0, 0.0, 0.0};
    const std::vector<double> want_ent{-1.0 / 3.0, -1.0 / 3.0, -1.0 / 3.0, 0.0};
    for (int i = 0; i < 4; ++i) {
      EXPECT_NEAR(g_new[i].item<double>(), want_new[i], tol) << "i = " << i;
      EXPECT_NEAR(g_ent[i].item<double>(), want_ent[i], tol) << "i = " << i;
    }
    // The masked sample's gradient is exactly 0, although its ratio is NaN.
    EXPECT_EQ(g_new[3].item<double>(), 0.0);
    // Without entropy_grad the second output is empty.
    auto [g_new2, g_none] = bwd_op().call(grad_loss, std::get<5>(fwd), x.advantages, x.factor,
                                          x.mask, std::get<4>(fwd), 0.2, 0.5, false);
    EXPECT_EQ(g_none.numel(), 0);
    EXPECT_TRUE(at::equal(g_new2, g_new));
  }
}

TEST(ClipSurrogateOp, AllMaskedIsZero) {
  const auto x = surrogate_table(at::kDouble);
  const auto mask = at::zeros_like(x.mask);
  const auto fwd = haml::clip_surrogate_fwd_cpu(x.logp_new, x.logp_old, x.advantages, x.factor,
                                                mask, x.entropy, 0.2, 0.5);
  EXPECT_EQ(std::get<0>(fwd).item<double>(), 0.0);
  EXPECT_EQ(std::get<1>(fwd).item<double>(), 0.0);
  EXPECT_EQ(std::get<2>(fwd).item<double>(), 0.0);
  EXPECT_EQ(std::get<3>(fwd).item<double>(), 0.0);
  EXPECT_EQ(std::get<4>(fwd).item<double>(), 0.0);
  auto [g_new, g_ent] = haml::clip_surrogate_bwd_cpu(at::scalar_tensor(1.0, at::kDouble),
                                                     std::get<5>(fwd), x.advantages, x.factor,
                                                     mask, std::get<4>(fwd), 0.2, 0.5, true);
  EXPECT_TRUE(at::equal(g_new, at::zeros_like(g_new)));
  EXPECT_TRUE(at::equal(g_ent, at::zeros_like(g_ent)));
}

// Many samples (several parallel chunks and vector blocks): the fused reduction equals a plain
// sum of the per-sample math over the same inputs.
TEST(ClipSurrogateOp, LargeInputMatchesPerSampleSum) {
  at::manual_seed(0);
  const int64_t n = 50021;
  auto logp_old = -1.0 - at::rand({n}, at::kDouble);
  auto logp_new = logp_old + 0.4 * at::randn({n}, at::kDouble);
  auto adv = at::randn({n}, at::kDouble), factor = 0.5 + at::rand({n}, at::kDouble);
  auto mask = (at::rand({n}, at::kDouble) < 0.8).to(at::kDouble) * at::rand({n}, at::kDouble);
  auto ent = at::rand({n}, at::kDouble);
  auto fwd = haml::clip_surrogate_fwd_cpu(logp_new, logp_old, adv, factor, mask, ent, 0.2, 0.01);
  double obj = 0, w = 0, h = 0, clipped = 0;
  const auto *pn = logp_new.const_data_ptr<double>(), *po = logp_old.const_data_ptr<double>(),
             *pa = adv.const_data_ptr<double>(), *pf = factor.const_data_ptr<double>(),
             *pm = mask.const_data_ptr<double>(), *pe = ent.const_data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) {
    if (pm[i] == 0.0) continue;
    const auto e = surrogate_element<double>(pn[i], po[i], pa[i], pf[i], true, 0.2);
    obj += pm[i] * e.objective;
    w += pm[i];
    h += pm[i] * pe[i];
    clipped += pm[i] * e.clipped;
  }
  EXPECT_NEAR(std::get<0>(fwd).item<double>(), -(obj + 0.01 * h) / w, 1e-12);
  EXPECT_NEAR(std::get<1>(fwd).item<double>(), clipped / w, 1e-12);
  EXPECT_NEAR(std::get<4>(fwd).item<double>(), w, 1e-9);
  // Both sides of the clip are exercised.
  EXPECT_GT(clipped / w, 0.2);
  EXPECT_LT(clipped / w, 0.9);
}

// ---------------------------------------------------------------------------------------------
// Bad input

using haml::testing::expect_error_naming;

TEST(ClipSurrogateOp, ForwardBadInputThrows) {
  const auto x = surrogate_table(at::kFloat);
  auto call = [&](const at::Tensor& logp_new, const at::Tensor& logp_old, const at::Tensor& adv,
                  const std::optional<at::Tensor>& factor, const std::optional<at::Tensor>& mask,
                  const std::optional<at::Tensor>& entropy, std::optional<double> clip) {
    return [=] { fwd_op().call(logp_new, logp_old, adv, factor, mask, entropy, clip, 0.0); };
  };
  const auto &lp = x.logp_new, &lo = x.logp_old, &a = x.advantages;
  expect_error_naming(call(lp.to(at::kInt), lo, a, {}, {}, {}, 0.2), "'logp_new'");
  expect_error_naming(call(lp, lo.to(at::kDouble), a, {}, {}, {}, 0.2), "'logp_old'");
  expect_error_naming(call(lp, lo, a.narrow(0, 0, 3), {}, {}, {}, 0.2), "'advantages'");
  expect_error_naming(call(lp, lo, a, x.factor.to(at::kDouble), {}, {}, 0.2), "'factor'");
  expect_error_naming(call(lp, lo, a, {}, x.mask.to(at::kBool), {}, 0.2), "'mask'");
  expect_error_naming(call(lp, lo, a, {}, {}, x.entropy.reshape({2, 2}), 0.2), "'entropy'");
  expect_error_naming(call(lp, lo, a, {}, {}, {}, -0.1), "'clip'");
  expect_error_naming(call(lp, lo, a, {}, {}, {}, kNaN), "'clip'");
}

TEST(ClipSurrogateOp, BackwardBadInputThrows) {
  const auto ratio = at::ones({4}, at::kFloat), adv = at::ones({4}, at::kFloat);
  const auto one = at::scalar_tensor(1.0, at::kFloat), w = at::scalar_tensor(4.0, at::kFloat);
  auto call = [&](const at::Tensor& grad, const at::Tensor& r, const at::Tensor& a,
                  const at::Tensor& ws, std::optional<double> clip) {
    return [=] { bwd_op().call(grad, r, a, {}, {}, ws, clip, 0.0, false); };
  };
  expect_error_naming(call(at::ones({2}, at::kFloat), ratio, adv, w, 0.2), "'grad_loss'");
  expect_error_naming(call(one, ratio.to(at::kLong), adv, w, 0.2), "'ratio'");
  expect_error_naming(call(one, ratio, adv.narrow(0, 0, 2), w, 0.2), "'advantages'");
  expect_error_naming(call(one, ratio, adv, w.to(at::kDouble), 0.2), "'weight_sum'");
  expect_error_naming(call(one, ratio, adv, w, -1.0), "'clip'");
}

}  // namespace
