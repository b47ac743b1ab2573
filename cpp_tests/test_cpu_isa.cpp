// The run-time choice of instruction set (haml/cpu_isa.h): names, what this CPU supports, switching
// levels, and the GAE scan at every supported level against the scalar recursion (gae_step).
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gae/gae_kernel.h"
#include "haml/cpu_isa.h"
#include "test_support.h"

namespace {

using haml::cpu::Isa;

// Restores the level that was active when the test started.
class CpuIsaTest : public ::testing::Test {
 protected:
  void TearDown() override { haml::cpu::set_active_isa(before_); }
  Isa before_ = haml::cpu::active_isa();
};

TEST_F(CpuIsaTest, NamesRoundTrip) {
  for (Isa isa : haml::cpu::compiled_isas()) {
    EXPECT_EQ(haml::cpu::isa_from_name(haml::cpu::isa_name(isa)), isa);
  }
  haml::testing::expect_error_naming([] { haml::cpu::isa_from_name("avx9"); }, "avx9");
}

TEST_F(CpuIsaTest, BaselineIsAlwaysSupportedAndTheActiveLevelIsSupported) {
  const auto supported = haml::cpu::supported_isas();
  ASSERT_FALSE(supported.empty());
  EXPECT_EQ(supported.front(), Isa::baseline);
  EXPECT_TRUE(std::is_sorted(supported.begin(), supported.end()));
  EXPECT_NE(std::find(supported.begin(), supported.end(), haml::cpu::active_isa()),
            supported.end());
}

TEST_F(CpuIsaTest, RefusesLevelsThisCpuCannotRun) {
  const auto supported = haml::cpu::supported_isas();
  for (Isa isa : haml::cpu::compiled_isas()) {
    if (std::find(supported.begin(), supported.end(), isa) != supported.end()) continue;
    haml::testing::expect_error_naming([isa] { haml::cpu::set_active_isa(isa); },
                                       haml::cpu::isa_name(isa));
    EXPECT_NE(haml::cpu::active_isa(), isa);
  }
}

// gae_step row by row, the scalar definition.
std::vector<double> scalar_gae(const std::vector<double>& r, const std::vector<double>& v,
                               const std::vector<double>& nv, const std::vector<uint8_t>& term,
                               const std::vector<uint8_t>& trunc, int64_t T, int64_t B,
                               double gamma, double lam) {
  std::vector<double> adv(T * B);
  for (int64_t b = 0; b < B; ++b) {
    double next = 0.0;
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t i = t * B + b;
      next = haml::detail::gae_step(r[i], v[i], nv[i], term[i] != 0, trunc[i] != 0, next, gamma,
                                    gamma * lam);
      adv[i] = next;
    }
  }
  return adv;
}

TEST_F(CpuIsaTest, GaeScanAtEverySupportedLevelMatchesTheScalarRecursion) {
  constexpr int64_t T = 9, B = 1003;  // two full tiles of 512 columns minus a ragged end
  std::mt19937 gen(3);
  std::normal_distribution<double> normal;
  std::bernoulli_distribution flag(0.1);
  std::vector<double> r(T * B), v(T * B), nv(T * B);
  std::vector<uint8_t> term(T * B), trunc(T * B);
  for (int64_t i = 0; i < T * B; ++i) {
    r[i] = normal(gen);
    v[i] = normal(gen);
    nv[i] = normal(gen);
    term[i] = flag(gen);
    trunc[i] = flag(gen);
  }
  const auto want = scalar_gae(r, v, nv, term, trunc, T, B, 0.99, 0.95);
  for (Isa isa : haml::cpu::supported_isas()) {
    haml::cpu::set_active_isa(isa);
    ASSERT_EQ(haml::cpu::active_isa(), isa);
    std::vector<double> adv(T * B), ret(T * B);
    haml::detail::gae_columns<double>(r.data(), v.data(), nv.data(),
                                      reinterpret_cast<const bool*>(term.data()),
                                      reinterpret_cast<const bool*>(trunc.data()), T, B, 0, B,
                                      0.99, 0.95, adv.data(), ret.data());
    for (int64_t i = 0; i < T * B; ++i) {
      ASSERT_NEAR(adv[i], want[i], 1e-12 * (1.0 + std::abs(want[i])))
          << haml::cpu::isa_name(isa) << " at " << i;
      ASSERT_NEAR(ret[i], want[i] + v[i], 1e-12 * (1.0 + std::abs(want[i] + v[i])));
    }
  }
}

}  // namespace
