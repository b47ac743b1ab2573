// GAE in C++: the header-only recursion (gae_step, gae_columns) on hand-computed tables, and the
// registered op haml::gae (through the dispatcher and through haml::gae_cpu) on at::Tensors,
// including the errors it raises on bad input.
//
// The hand-computed trajectory used throughout: T = 3, gamma = lam = 0.5 (gamma * lam = 0.25);
// every number below is exact in binary floating point, so the tables compare with ==.
//   r = [1, 2, 3],  V(s_t) = [0.5, 1, 1.5],  V(s_{t+1}) = [1, 1.5, 4]
//   bootstrapped  delta_t = r_t + gamma V(s_{t+1}) - V(s_t):  delta = [1, 1.75, 3.5]
//   terminated    delta_t = r_t - V(s_t):                      delta' = [0.5, 1, 1.5]
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "gae/gae_kernel.h"
#include "haml/ops.h"
#include "test_support.h"

namespace {

using haml::detail::gae_columns;
using haml::detail::gae_step;

constexpr double kGamma = 0.5;
constexpr double kLam = 0.5;

// Three columns of the same trajectory, row-major [T = 3, B = 3]:
//   column 0: no flag.
//     A_2 = 3.5, A_1 = 1.75 + 0.25 * 3.5 = 2.625, A_0 = 1 + 0.25 * 2.625 = 1.65625
//   column 1: terminated at t = 0, truncated at t = 2.
//     A_2 = delta_2 = 3.5 (a time limit bootstraps from V(s_3) = 4; nothing is carried past T)
//     A_1 = 1.75 + 0.25 * 3.5 = 2.625
//     A_0 = delta'_0 = 0.5 (no bootstrap, no carry)
//   column 2: truncated at t = 0, terminated at t = 2.
//     A_2 = delta'_2 = 1.5
//     A_1 = 1.75 + 0.25 * 1.5 = 2.125
//     A_0 = delta_0 = 1 (bootstraps from V(s_1) = 1, but carries nothing)
struct Table {
  std::vector<double> rewards{1, 1, 1, 2, 2, 2, 3, 3, 3};
  std::vector<double> values{0.5, 0.5, 0.5, 1, 1, 1, 1.5, 1.5, 1.5};
  std::vector<double> next_values{1, 1, 1, 1.5, 1.5, 1.5, 4, 4, 4};
  std::vector<uint8_t> terminated{0, 1, 0, 0, 0, 0, 0, 0, 1};
  std::vector<uint8_t> truncated{0, 0, 1, 0, 0, 0, 0, 1, 0};
  std::vector<double> advantages{1.65625, 0.5, 1.0, 2.625, 2.625, 2.125, 3.5, 3.5, 1.5};
  static constexpr int64_t T = 3, B = 3;
};

template <typename scalar_t>
std::vector<scalar_t> cast(const std::vector<double>& x) {
  return std::vector<scalar_t>(x.begin(), x.end());
}

// ---------------------------------------------------------------------------------------------
// gae_step

TEST(GaeStep, HandComputed) {
  // r = 1, V(s) = 0.5, V(s') = 1, A_{t+1} = 2, gamma = 0.5, gamma * lam = 0.25
  // none:       1 + 0.5 - 0.5 + 0.25 * 2 = 1.5
  // terminated: 1 - 0.5 (no bootstrap, no carry) = 0.5
  // truncated:  1 + 0.5 - 0.5 (bootstrap, no carry) = 1
  EXPECT_EQ(gae_step<double>(1, 0.5, 1, false, false, 2, 0.5, 0.25), 1.5);
  EXPECT_EQ(gae_step<double>(1, 0.5, 1, true, false, 2, 0.5, 0.25), 0.5);
  EXPECT_EQ(gae_step<double>(1, 0.5, 1, false, true, 2, 0.5, 0.25), 1.0);
  EXPECT_EQ(gae_step<double>(1, 0.5, 1, true, true, 2, 0.5, 0.25), 0.5);
  EXPECT_EQ(gae_step<float>(1, 0.5f, 1, false, false, 2, 0.5f, 0.25f), 1.5f);
}

TEST(GaeStep, NaNPropagatesWithinAnEpisode) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_TRUE(std::isnan(gae_step<double>(nan, 0.5, 1, false, false, 2, 0.5, 0.25)));
  EXPECT_TRUE(std::isnan(gae_step<double>(1, 0.5, 1, false, false, nan, 0.5, 0.25)));
}

// A done step starts a new episode (backwards in time): the advantage carried from the next
// episode must not reach it, even when that advantage is NaN or inf (0 * NaN is NaN).
TEST(GaeStep, DoneIgnoresTheCarriedAdvantage) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(gae_step<double>(1, 0.5, 1, true, false, nan, 0.5, 0.25), 0.5);
  EXPECT_EQ(gae_step<double>(1, 0.5, 1, false, true, nan, 0.5, 0.25), 1.0);
  EXPECT_EQ(gae_step<double>(1, 0.5, 1, false, true, inf, 0.5, 0.25), 1.0);
  // gamma * lam = 0: nothing is carried, whatever A_{t+1} is.
  EXPECT_EQ(gae_step<double>(1, 0.5, 1, false, false, nan, 0.5, 0.0), 1.0);
}

// A terminated step does not bootstrap: V(s_{t+1}) is never read there (it may be garbage).
TEST(GaeStep, TerminationIgnoresTheNextValue) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(gae_step<double>(1, 0.5, nan, true, false, 2, 0.5, 0.25), 0.5);
}

// ---------------------------------------------------------------------------------------------
// gae_columns

template <typename scalar_t>
void check_table_columns() {
  const Table tab;
  const auto r = cast<scalar_t>(tab.rewards), v = cast<scalar_t>(tab.values),
             nv = cast<scalar_t>(tab.next_values);
  std::vector<scalar_t> adv(9, scalar_t(-7)), ret(9, scalar_t(-7));
  gae_columns<scalar_t>(r.data(), v.data(), nv.data(),
                        reinterpret_cast<const bool*>(tab.terminated.data()),
                        reinterpret_cast<const bool*>(tab.truncated.data()), Table::T, Table::B,
                        0, Table::B, scalar_t(kGamma), scalar_t(kLam), adv.data(), ret.data());
  for (int i = 0; i < 9; ++i) {
    EXPECT_EQ(adv[i], scalar_t(tab.advantages[i])) << "i = " << i;
    EXPECT_EQ(ret[i], scalar_t(tab.advantages[i] + tab.values[i])) << "i = " << i;
  }
}

TEST(GaeColumns, HandComputedDouble) { check_table_columns<double>(); }
TEST(GaeColumns, HandComputedFloat) { check_table_columns<float>(); }

// A parallel task owns columns [col_begin, col_end) and must write nothing else.
TEST(GaeColumns, WritesOnlyItsColumns) {
  const Table tab;
  std::vector<double> adv(9, -7.0), ret(9, -7.0);
  gae_columns<double>(tab.rewards.data(), tab.values.data(), tab.next_values.data(),
                      reinterpret_cast<const bool*>(tab.terminated.data()),
                      reinterpret_cast<const bool*>(tab.truncated.data()), Table::T, Table::B, 1,
                      2, kGamma, kLam, adv.data(), ret.data());
  for (int t = 0; t < 3; ++t) {
    EXPECT_EQ(adv[t * 3 + 0], -7.0);
    EXPECT_EQ(adv[t * 3 + 1], tab.advantages[t * 3 + 1]);
    EXPECT_EQ(adv[t * 3 + 2], -7.0);
    EXPECT_EQ(ret[t * 3 + 2], -7.0);
  }
}

// Without dones, A_t = sum_k (gamma lam)^k delta_{t+k}: a forward sum, independent of the
// backward recursion under test.
TEST(GaeColumns, NoDoneIsDiscountedSumOfDeltas) {
  const int64_t T = 40;
  const double gamma = 0.97, lam = 0.9;
  std::vector<double> r(T), v(T), nv(T), adv(T), ret(T);
  for (int64_t t = 0; t < T; ++t) {
    r[t] = std::sin(0.3 * t);
    v[t] = std::cos(0.7 * t);
    nv[t] = 0.5 * std::sin(1.1 * t + 0.2);
  }
  std::vector<uint8_t> never(T, 0);
  const auto* flags = reinterpret_cast<const bool*>(never.data());
  gae_columns<double>(r.data(), v.data(), nv.data(), flags, flags, T, 1, 0, 1, gamma, lam,
                      adv.data(), ret.data());
  for (int64_t t = 0; t < T; ++t) {
    double want = 0.0, weight = 1.0;
    for (int64_t s = t; s < T; ++s, weight *= gamma * lam) {
      want += weight * (r[s] + gamma * nv[s] - v[s]);
    }
    EXPECT_NEAR(adv[t], want, 1e-12) << "t = " << t;
    EXPECT_NEAR(ret[t], want + v[t], 1e-12) << "t = " << t;
  }
}

// ---------------------------------------------------------------------------------------------
// The registered op

using GaeFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                 const at::Tensor&, const at::Tensor&,
                                                 const at::Tensor&, double, double);

c10::TypedOperatorHandle<GaeFn> gae_op() {
  return c10::Dispatcher::singleton().findSchemaOrThrow("haml::gae", "").typed<GaeFn>();
}

struct TableTensors {
  at::Tensor rewards, values, next_values, terminated, truncated, advantages;
};

TableTensors table_tensors(at::ScalarType dtype) {
  const Table tab;
  auto f = [&](const std::vector<double>& x) {
    return at::tensor(x, at::kDouble).reshape({Table::T, Table::B}).to(dtype);
  };
  auto b = [&](const std::vector<uint8_t>& x) {
    return at::tensor(std::vector<int64_t>(x.begin(), x.end()), at::kLong)
        .reshape({Table::T, Table::B})
        .to(at::kBool);
  };
  return {f(tab.rewards),    f(tab.values),    f(tab.next_values),
          b(tab.terminated), b(tab.truncated), f(tab.advantages)};
}

TEST(GaeOp, DispatcherHandComputed) {
  for (auto dtype : {at::kFloat, at::kDouble}) {
    const auto x = table_tensors(dtype);
    auto [adv, ret] = gae_op().call(x.rewards, x.values, x.next_values, x.terminated,
                                    x.truncated, kGamma, kLam);
    EXPECT_EQ(adv.scalar_type(), dtype);
    EXPECT_EQ(adv.sizes(), x.rewards.sizes());
    EXPECT_TRUE(at::equal(adv, x.advantages)) << adv;
    EXPECT_TRUE(at::equal(ret, x.advantages + x.values)) << ret;
  }
}

TEST(GaeOp, NonContiguousInputs) {
  const auto x = table_tensors(at::kDouble);
  // The same [T, B] values stored as the transpose of a [B, T] tensor: strides (1, T).
  auto strided = [](const at::Tensor& t) { return t.t().contiguous().t(); };
  ASSERT_FALSE(strided(x.rewards).is_contiguous());
  auto [adv, ret] = haml::gae_cpu(strided(x.rewards), strided(x.values),
                                  strided(x.next_values), strided(x.terminated),
                                  strided(x.truncated), kGamma, kLam);
  EXPECT_TRUE(at::equal(adv, x.advantages)) << adv;
  EXPECT_TRUE(at::equal(ret, x.advantages + x.values)) << ret;
}

// Enough columns for at::parallel_for to split the batch: each column must equal the same column
// computed alone by the header.
TEST(GaeOp, ParallelColumnsMatchOneColumnAtATime) {
  at::manual_seed(0);
  const int64_t T = 9, B = 3000;
  auto r = at::randn({T, B}, at::kDouble), v = at::randn({T, B}, at::kDouble),
       nv = at::randn({T, B}, at::kDouble);
  auto term = at::rand({T, B}, at::kDouble) < 0.1, trunc = at::rand({T, B}, at::kDouble) < 0.1;
  auto [adv, ret] = haml::gae_cpu(r, v, nv, term, trunc, 0.99, 0.95);
  std::vector<double> col_adv(T * B), col_ret(T * B);
  for (int64_t j = 0; j < B; ++j) {
    gae_columns<double>(r.const_data_ptr<double>(), v.const_data_ptr<double>(),
                        nv.const_data_ptr<double>(), term.const_data_ptr<bool>(),
                        trunc.const_data_ptr<bool>(), T, B, j, j + 1, 0.99, 0.95,
                        col_adv.data(), col_ret.data());
  }
  auto want = at::tensor(col_adv, at::kDouble).reshape({T, B});
  EXPECT_TRUE(at::equal(adv, want));
}

TEST(GaeOp, EmptyBatchAndEmptyTime) {
  for (auto shape : {std::vector<int64_t>{3, 0}, std::vector<int64_t>{2, 4, 0},
                     std::vector<int64_t>{0, 3}}) {
    auto z = at::zeros(shape, at::kFloat);
    auto f = at::zeros(shape, at::kBool);
    auto [adv, ret] = haml::gae_cpu(z, z, z, f, f, 0.99, 0.95);
    EXPECT_EQ(adv.sizes(), z.sizes());
    EXPECT_EQ(ret.sizes(), z.sizes());
  }
}

TEST(GaeOp, OneStepOneColumn) {
  // T = 1: A_0 = r + gamma V(s_1) - V(s_0) = 1 + 0.5 * 4 - 0.5 = 2.5, or 0.5 when terminated.
  auto r = at::ones({1}, at::kDouble), v = at::full({1}, 0.5, at::kDouble),
       nv = at::full({1}, 4.0, at::kDouble);
  auto no = at::zeros({1}, at::kBool), yes = at::ones({1}, at::kBool);
  EXPECT_EQ(std::get<0>(haml::gae_cpu(r, v, nv, no, no, 0.5, 0.5)).item<double>(), 2.5);
  EXPECT_EQ(std::get<0>(haml::gae_cpu(r, v, nv, no, yes, 0.5, 0.5)).item<double>(), 2.5);
  EXPECT_EQ(std::get<0>(haml::gae_cpu(r, v, nv, yes, no, 0.5, 0.5)).item<double>(), 0.5);
}

// ---------------------------------------------------------------------------------------------
// Bad input: a c10::Error (RuntimeError in Python) that names the argument, never a crash.

using haml::testing::expect_error_naming;

TEST(GaeOp, BadInputThrows) {
  const auto x = table_tensors(at::kFloat);
  auto call = [&](const at::Tensor& r, const at::Tensor& v, const at::Tensor& nv,
                  const at::Tensor& term, const at::Tensor& trunc) {
    return [=] { gae_op().call(r, v, nv, term, trunc, 0.99, 0.95); };
  };
  const auto &r = x.rewards, &v = x.values, &nv = x.next_values;
  const auto &term = x.terminated, &trunc = x.truncated;
  expect_error_naming(call(r.to(at::kInt), v, nv, term, trunc), "'rewards'");
  expect_error_naming(call(r, v.to(at::kDouble), nv, term, trunc), "'values'");
  expect_error_naming(call(r, v, nv.to(at::kDouble), term, trunc), "'next_values'");
  expect_error_naming(call(r, v, nv, term.to(at::kFloat), trunc), "'terminated'");
  expect_error_naming(call(r, v, nv, term, trunc.to(at::kFloat)), "'truncated'");
  expect_error_naming(call(r, v.narrow(1, 0, 2), nv, term, trunc), "'values'");
  expect_error_naming(call(r, v, nv.reshape({9}), term, trunc), "'next_values'");
  expect_error_naming(call(r, v, nv, term, trunc.narrow(0, 0, 2)), "'truncated'");
  auto s = at::scalar_tensor(1.0, at::kFloat);
  auto sb = at::scalar_tensor(false, at::kBool);
  expect_error_naming(call(s, s, s, sb, sb), "'rewards'");
}

TEST(GaeOp, OutOfRangeDiscountsThrow) {
  const auto x = table_tensors(at::kFloat);
  auto call = [&](double gamma, double lam) {
    return [=] {
      gae_op().call(x.rewards, x.values, x.next_values, x.terminated, x.truncated, gamma, lam);
    };
  };
  expect_error_naming(call(5.0, 0.95), "'gamma'");
  expect_error_naming(call(-0.1, 0.95), "'gamma'");
  expect_error_naming(call(std::nan(""), 0.95), "'gamma'");
  expect_error_naming(call(0.99, -1.0), "'lam'");
  expect_error_naming(call(0.99, 1.5), "'lam'");
  expect_error_naming(call(0.99, std::nan("")), "'lam'");
  // The ends of [0, 1] are valid.
  gae_op().call(x.rewards, x.values, x.next_values, x.terminated, x.truncated, 0.0, 1.0);
  gae_op().call(x.rewards, x.values, x.next_values, x.terminated, x.truncated, 1.0, 0.0);
}

}  // namespace
