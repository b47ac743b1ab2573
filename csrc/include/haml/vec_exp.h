// exp(x) written so that a compiler vectorises loops over it (no library call, no branch).
// Cody–Waite reduction x = k ln2 + r, |r| <= ln2/2, then a Taylor polynomial for e^r (degree 7
// for float: relative error < 1e-7; degree 13 for double: < 3e-16) and 2^k from exponent bits.
// Overflow gives inf, underflow 0 (no subnormals), NaN stays NaN, as the library exp does.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

namespace haml::detail {

template <typename scalar_t>
struct ExpTraits;

template <>
struct ExpTraits<float> {
  using bits_t = int32_t;
  static constexpr int kMantissaBits = 23;
  static constexpr int kBias = 127;
  static constexpr float kMaxArg = 88.72283935546875f;    // ln(FLT_MAX)
  static constexpr float kMinArg = -87.33654022216797f;   // ln(FLT_MIN)
  static constexpr float kLn2Hi = 0.693145751953125f;     // exact in 16 bits
  static constexpr float kLn2Lo = 1.428606765330187e-06f;
  static constexpr int kDegree = 7;
};

template <>
struct ExpTraits<double> {
  using bits_t = int64_t;
  static constexpr int kMantissaBits = 52;
  static constexpr int kBias = 1023;
  static constexpr double kMaxArg = 709.782712893384;     // ln(DBL_MAX)
  static constexpr double kMinArg = -708.3964185322641;   // ln(DBL_MIN)
  static constexpr double kLn2Hi = 0.6931471803691238;    // exact in 32 bits
  static constexpr double kLn2Lo = 1.9082149292705877e-10;
  static constexpr int kDegree = 13;
};

template <typename scalar_t, int j>
constexpr scalar_t inv_factorial() {
  if constexpr (j == 0) {
    return scalar_t(1);
  } else {
    return inv_factorial<scalar_t, j - 1>() / scalar_t(j);
  }
}

// Horner form of sum_{i=j..degree} r^(i-j) / i!.
template <typename scalar_t, int j, int degree>
inline scalar_t exp_taylor(scalar_t r) {
  if constexpr (j == degree) {
    return inv_factorial<scalar_t, degree>();
  } else {
    return exp_taylor<scalar_t, j + 1, degree>(r) * r + inv_factorial<scalar_t, j>();
  }
}

template <typename To, typename From>
inline To bit_cast(From from) {
  static_assert(sizeof(To) == sizeof(From));
  To to;
  std::memcpy(&to, &from, sizeof(to));
  return to;
}

template <typename scalar_t>
inline scalar_t vec_exp(scalar_t x) {
  using Tr = ExpTraits<scalar_t>;
  using bits_t = typename Tr::bits_t;
  constexpr scalar_t kLog2e = scalar_t(1.4426950408889634);
  // Adding 1.5 * 2^mantissa rounds x log2(e) to an integer k held in the low mantissa bits: no
  // rounding or float-to-int instruction that the baseline ISA may lack.
  constexpr scalar_t kRound = scalar_t(1.5) * scalar_t(bits_t(1) << Tr::kMantissaBits);
  scalar_t xc = x < Tr::kMinArg ? Tr::kMinArg : x;
  xc = xc > Tr::kMaxArg ? Tr::kMaxArg : xc;
  const scalar_t k = (xc * kLog2e + kRound) - kRound;
  const scalar_t r = (xc - k * Tr::kLn2Hi) - k * Tr::kLn2Lo;
  const scalar_t p = exp_taylor<scalar_t, 0, Tr::kDegree>(r);
  // 2^k as 2^k1 * 2^k2 with k1 ~ k/2: each factor stays a normal number over the whole clamped
  // range, where 2^k alone would not at its ends (k = max exponent + 1, or min exponent with a
  // negative r). The integer of a float integer is read from the rounding trick's mantissa bits.
  const scalar_t shifted1 = k * scalar_t(0.5) + kRound;
  const scalar_t k1 = shifted1 - kRound;
  const scalar_t shifted2 = (k - k1) + kRound;
  const bits_t k1_int = bit_cast<bits_t>(shifted1) - bit_cast<bits_t>(kRound);
  const bits_t k2_int = bit_cast<bits_t>(shifted2) - bit_cast<bits_t>(kRound);
  const scalar_t scale1 = bit_cast<scalar_t>((k1_int + Tr::kBias) << Tr::kMantissaBits);
  const scalar_t scale2 = bit_cast<scalar_t>((k2_int + Tr::kBias) << Tr::kMantissaBits);
  scalar_t y = (p * scale1) * scale2;
  y = x > Tr::kMaxArg ? std::numeric_limits<scalar_t>::infinity() : y;
  y = x < Tr::kMinArg ? scalar_t(0) : y;
  return x != x ? x : y;  // NaN in, NaN out
}

}  // namespace haml::detail
