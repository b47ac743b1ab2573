// Helpers for CPU loops that the compiler vectorises (haml/cpu_isa.h compiles them per
// instruction-set level).
#pragma once

#include <cstdint>
#include <cstring>

namespace haml::detail {

template <typename scalar_t>
struct SameSizeInt;
template <>
struct SameSizeInt<float> {
  using type = int32_t;
};
template <>
struct SameSizeInt<double> {
  using type = int64_t;
};

// x where keep is true, else +0.0, by masking the bits: unlike x * keep it never turns an inf or
// NaN into NaN, and unlike a ternary on a bool loaded from memory GCC vectorises it well.
template <typename scalar_t>
inline scalar_t keep_if(scalar_t x, bool keep) {
  using int_t = typename SameSizeInt<scalar_t>::type;
  int_t bits;
  std::memcpy(&bits, &x, sizeof(x));
  bits &= -static_cast<int_t>(keep);
  std::memcpy(&x, &bits, sizeof(x));
  return x;
}

}  // namespace haml::detail
