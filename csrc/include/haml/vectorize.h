// Helpers for CPU loops that the compiler vectorises.
#pragma once

#include <cstdint>
#include <cstring>

// A function compiled twice, for AVX2 and for the baseline ISA; the loader picks one at run time.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define HAML_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define HAML_VECTOR_CLONES
#endif

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
