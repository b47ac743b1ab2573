// LayerNorm in C++: the header's row kernel (layer_norm_rows) against a plain double-precision
// computation at every instruction-set level this CPU runs, for row counts and widths around its
// block of rows and its vector width, and the registered op haml::layer_norm_fwd on at::Tensors
// against at::native_layer_norm, including the errors it raises on bad input.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "haml/cpu_isa.h"
#include "haml/ops.h"
#include "layer_norm/layer_norm_kernel.h"
#include "test_support.h"

namespace {

// Restores the active level when a test ends, whatever it set.
struct IsaGuard {
  haml::cpu::Isa before = haml::cpu::active_isa();
  ~IsaGuard() { haml::cpu::set_active_isa(before); }
};

template <typename T>
void check_rows(int64_t rows, int64_t d, bool keep_xhat) {
  std::mt19937 gen(static_cast<unsigned>(rows * 1000 + d));
  std::normal_distribution<double> normal;
  std::vector<T> x(rows * d), gamma(d), beta(d);
  for (auto& v : x) v = static_cast<T>(normal(gen) + 2.0);  // off zero, as after a ReLU
  for (auto& v : gamma) v = static_cast<T>(normal(gen));
  for (auto& v : beta) v = static_cast<T>(normal(gen));
  std::vector<T> mean(rows), rstd(rows), xhat(rows * d), out(rows * d);
  const T eps = T(1e-5);
  if (keep_xhat)
    haml::detail::layer_norm_row_range<T, true>(x.data(), gamma.data(), beta.data(), eps,
                                                mean.data(), rstd.data(), xhat.data(), out.data(),
                                                0, rows, d);
  else
    haml::detail::layer_norm_row_range<T, false>(x.data(), gamma.data(), beta.data(), eps,
                                                 mean.data(), rstd.data(), nullptr, out.data(), 0,
                                                 rows, d);
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  for (int64_t i = 0; i < rows; ++i) {
    double m = 0, v = 0;
    for (int64_t j = 0; j < d; ++j) m += x[i * d + j];
    m /= d;
    for (int64_t j = 0; j < d; ++j) v += (x[i * d + j] - m) * (x[i * d + j] - m);
    const double r = 1.0 / std::sqrt(v / d + eps);
    ASSERT_NEAR(mean[i], m, tol * (1 + std::abs(m))) << "row " << i;
    ASSERT_NEAR(rstd[i], r, tol * r) << "row " << i;
    for (int64_t j = 0; j < d; ++j) {
      const double h = (x[i * d + j] - m) * r;
      if (keep_xhat) ASSERT_NEAR(xhat[i * d + j], h, tol * (1 + std::abs(h)));
      const double y = gamma[j] * h + beta[j];
      ASSERT_NEAR(out[i * d + j], y, tol * (1 + std::abs(y))) << "row " << i << " col " << j;
    }
  }
}

TEST(LayerNormRows, MatchesDoublePrecisionAtEveryLevel) {
  IsaGuard guard;
  for (auto isa : haml::cpu::supported_isas()) {
    haml::cpu::set_active_isa(isa);
    SCOPED_TRACE(haml::cpu::isa_name(isa));
    // Rows: fewer than a block, a block of each type's lanes, blocks plus a remainder. Widths:
    // under one vector, whole vectors, vectors plus a tail.
    for (int64_t rows : {1, 3, 4, 8, 13, 33}) {
      for (int64_t d : {1, 3, 8, 17, 64, 67}) {
        for (bool keep : {false, true}) {
          check_rows<float>(rows, d, keep);
          check_rows<double>(rows, d, keep);
        }
      }
    }
  }
}

const c10::OperatorHandle& layer_norm_op() {
  static const auto handle = c10::Dispatcher::singleton().findSchemaOrThrow("haml::layer_norm_fwd", "");
  return handle;
}

TEST(LayerNormOp, MatchesNativeLayerNorm) {
  at::manual_seed(0);
  for (auto dtype : {at::kFloat, at::kDouble}) {
    const auto opts = at::TensorOptions().dtype(dtype);
    // Enough rows for at::parallel_for to split them, and a leading batch dimension.
    auto x = at::randn({3, 700, 40}, opts), w = at::randn({40}, opts), b = at::randn({40}, opts);
    auto [out, mean, rstd] =
        layer_norm_op().typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
            const at::Tensor&, const at::Tensor&, const at::Tensor&, double)>()
            .call(x, w, b, 1e-5);
    auto [want_out, want_mean, want_rstd] = at::native_layer_norm(x, {40}, w, b, 1e-5);
    const double tol = dtype == at::kFloat ? 1e-5 : 1e-12;
    EXPECT_EQ(mean.sizes(), want_mean.sizes());
    EXPECT_TRUE(at::allclose(out, want_out, tol, tol));
    EXPECT_TRUE(at::allclose(mean, want_mean, tol, tol));
    EXPECT_TRUE(at::allclose(rstd, want_rstd, tol, tol));
  }
}

TEST(LayerNormOp, NonContiguousInputAndNoRow) {
  auto x = at::randn({16, 5}, at::kDouble).t();  // [5, 16], strides (1, 5)
  auto w = at::randn({16}, at::kDouble), b = at::randn({16}, at::kDouble);
  ASSERT_FALSE(x.is_contiguous());
  auto [out, mean, rstd] = haml::layer_norm_fwd_cpu(x, w, b, 1e-5);
  auto [want, want_mean, want_rstd] = at::native_layer_norm(x, {16}, w, b, 1e-5);
  EXPECT_TRUE(at::allclose(out, want, 1e-12, 1e-12));
  auto [empty, empty_mean, empty_rstd] =
      haml::layer_norm_fwd_cpu(at::empty({0, 16}, at::kDouble), w, b, 1e-5);
  EXPECT_EQ(empty.sizes(), (std::vector<int64_t>{0, 16}));
  EXPECT_EQ(empty_mean.sizes(), (std::vector<int64_t>{0, 1}));
}

TEST(LayerNormOp, BadInputThrows) {
  using haml::testing::expect_error_naming;
  auto x = at::randn({4, 8}, at::kDouble), w = at::randn({8}, at::kDouble);
  auto b = at::randn({8}, at::kDouble);
  expect_error_naming([&] { haml::layer_norm_fwd_cpu(x.to(at::kInt), w, b, 1e-5); }, "'input'");
  expect_error_naming([&] { haml::layer_norm_fwd_cpu(x, w.to(at::kFloat), b, 1e-5); }, "'weight'");
  expect_error_naming([&] { haml::layer_norm_fwd_cpu(x, w, b.slice(0, 0, 7), 1e-5); }, "'bias'");
  expect_error_naming([&] { haml::layer_norm_fwd_cpu(x.slice(1, 0, 0), w, b, 1e-5); }, "'input'");
  expect_error_naming([&] { haml::layer_norm_fwd_cpu(x, w, b, -1.0); }, "'eps'");
  expect_error_naming([&] { haml::layer_norm_fwd_cpu(x, w, b, std::nan("")); }, "'eps'");
}

}  // namespace
