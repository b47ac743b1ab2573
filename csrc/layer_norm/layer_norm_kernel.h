// LayerNorm over the last dimension of row-major [rows, d]: shared by the layer_norm op's CPU
// kernel, the native Fisher product (which also keeps x̂) and the C++ tests. Plain C++ on raw
// pointers.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "haml/cpu_isa.h"

namespace haml::detail {

// 32-byte vectors in GCC/clang's generic vector extension: compiled as AVX registers where the
// instruction set has them (haml/cpu_isa.h's levels) and as two SSE registers at the baseline.
template <typename T>
struct LnVec;
template <>
struct LnVec<float> {
  typedef float type __attribute__((vector_size(32)));
  static constexpr int kLanes = 8;
};
template <>
struct LnVec<double> {
  typedef double type __attribute__((vector_size(32)));
  static constexpr int kLanes = 4;
};

// The vectors travel by reference, never by value: a 32-byte vector passed or returned by value
// has a different ABI with and without AVX (GCC and clang warn), and these inline functions are
// compiled at every level.
template <typename V, typename T>
HAML_KERNEL_BODY void ln_load(V& v, const T* p) {
  std::memcpy(&v, p, sizeof(V));  // an unaligned vector load
}

// The lane sums of kLanes vectors side by side: lane k of the result is the sum of acc[k]'s
// lanes. Pairwise shuffles and adds (a transpose that adds as it goes): log2(kLanes) rounds of
// vector operations instead of one horizontal sum per row, whose serial latency was most of a
// row's time when each row was summed on its own.
HAML_KERNEL_BODY void ln_lane_sums(const LnVec<float>::type (&a)[8], LnVec<float>::type& sums) {
  using V = LnVec<float>::type;
  V p[4], q[2];
  for (int k = 0; k < 4; ++k)
    p[k] = __builtin_shufflevector(a[2 * k], a[2 * k + 1], 0, 8, 2, 10, 4, 12, 6, 14) +
           __builtin_shufflevector(a[2 * k], a[2 * k + 1], 1, 9, 3, 11, 5, 13, 7, 15);
  for (int k = 0; k < 2; ++k)
    q[k] = __builtin_shufflevector(p[2 * k], p[2 * k + 1], 0, 1, 8, 9, 4, 5, 12, 13) +
           __builtin_shufflevector(p[2 * k], p[2 * k + 1], 2, 3, 10, 11, 6, 7, 14, 15);
  sums = __builtin_shufflevector(q[0], q[1], 0, 1, 2, 3, 8, 9, 10, 11) +
         __builtin_shufflevector(q[0], q[1], 4, 5, 6, 7, 12, 13, 14, 15);
}

HAML_KERNEL_BODY void ln_lane_sums(const LnVec<double>::type (&a)[4], LnVec<double>::type& sums) {
  using V = LnVec<double>::type;
  const V p0 = __builtin_shufflevector(a[0], a[1], 0, 4, 2, 6) +
               __builtin_shufflevector(a[0], a[1], 1, 5, 3, 7);
  const V p1 = __builtin_shufflevector(a[2], a[3], 0, 4, 2, 6) +
               __builtin_shufflevector(a[2], a[3], 1, 5, 3, 7);
  sums = __builtin_shufflevector(p0, p1, 0, 1, 4, 5) + __builtin_shufflevector(p0, p1, 2, 3, 6, 7);
}

// Writes one row's x̂ (when KeepXhat) and y = γ ⊙ x̂ + β.
template <typename T, bool KeepXhat>
HAML_KERNEL_BODY void ln_write_row(const T* __restrict xi, const T* __restrict gamma,
                                   const T* __restrict beta, T m, T r, T* __restrict hi,
                                   T* __restrict oi, int64_t d) {
  if constexpr (KeepXhat) {
    for (int64_t j = 0; j < d; ++j) {
      hi[j] = (xi[j] - m) * r;
      oi[j] = gamma[j] * hi[j] + beta[j];
    }
  } else {
    for (int64_t j = 0; j < d; ++j) oi[j] = gamma[j] * ((xi[j] - m) * r) + beta[j];
  }
}

// For each of `rows` rows x of width d (row-major, contiguous):
//   μ = mean(x),  σ² = mean((x − μ)²),  r = 1/√(σ² + eps),  x̂ = (x − μ) r,  y = γ ⊙ x̂ + β
// (Ba et al. 2016, eq. 4). The variance takes a second pass over the row, (x − μ)², rather than
// mean(x²) − μ², which cancels catastrophically when |μ| ≫ σ; the rows of a block stay in L1
// between the passes. Rows go kLanes at a time: each row's sums accumulate in a vector along the
// row, and ln_lane_sums turns the block's kLanes vectors into one vector of row sums, so that μ,
// σ² and r of the block are vector operations too. mean and rstd get one entry per row; xhat is
// written only when KeepXhat.
template <typename T, bool KeepXhat>
HAML_KERNEL_BODY void layer_norm_rows(const T* __restrict x, const T* __restrict gamma,
                                      const T* __restrict beta, T eps, T* __restrict mean,
                                      T* __restrict rstd, T* __restrict xhat, T* __restrict out,
                                      int64_t rows, int64_t d) {
  using V = typename LnVec<T>::type;
  constexpr int W = LnVec<T>::kLanes;
  const T inv_d = T(1) / static_cast<T>(d);
  const int64_t d_vec = d - d % W;  // the columns summed in vectors; the rest one by one
  int64_t i = 0;
  for (; i + W <= rows; i += W) {
    const T* __restrict xb = x + i * d;
    // The block's W rows side by side in one loop: W independent chains of vector adds, where
    // one row at a time left each add waiting for the one before it.
    V acc[W];
    T tail[W];
    for (int k = 0; k < W; ++k) acc[k] = V{};
    for (int64_t j = 0; j < d_vec; j += W)
      for (int k = 0; k < W; ++k) {
        V v;
        ln_load(v, xb + k * d + j);
        acc[k] += v;
      }
    for (int k = 0; k < W; ++k) {
      T t = T(0);
      for (int64_t j = d_vec; j < d; ++j) t += xb[k * d + j];
      tail[k] = t;
    }
    V m, tails;
    ln_lane_sums(acc, m);
    ln_load(tails, tail);
    m = (m + tails) * inv_d;
    V mk[W];
    for (int k = 0; k < W; ++k) {
      mk[k] = V{} + m[k];  // m[k] in every lane
      acc[k] = V{};
    }
    for (int64_t j = 0; j < d_vec; j += W)
      for (int k = 0; k < W; ++k) {
        V c;
        ln_load(c, xb + k * d + j);
        c -= mk[k];
        acc[k] += c * c;
      }
    for (int k = 0; k < W; ++k) {
      T t = T(0);
      for (int64_t j = d_vec; j < d; ++j) t += (xb[k * d + j] - m[k]) * (xb[k * d + j] - m[k]);
      tail[k] = t;
    }
    V variance;
    ln_lane_sums(acc, variance);
    ln_load(tails, tail);
    variance = (variance + tails) * inv_d;
    std::memcpy(mean + i, &m, sizeof(V));
    T* __restrict r = rstd + i;
    std::memcpy(r, &variance, sizeof(V));
    for (int k = 0; k < W; ++k) r[k] = T(1) / std::sqrt(r[k] + eps);
    for (int k = 0; k < W; ++k)
      ln_write_row<T, KeepXhat>(xb + k * d, gamma, beta, m[k], r[k],
                                KeepXhat ? xhat + (i + k) * d : xhat, out + (i + k) * d, d);
  }
  for (; i < rows; ++i) {  // the last rows % kLanes rows, one at a time (in order: few rows)
    const T* __restrict xi = x + i * d;
    T sum = T(0);
    for (int64_t j = 0; j < d; ++j) sum += xi[j];
    const T m = sum * inv_d;
    T squares = T(0);
    for (int64_t j = 0; j < d; ++j) squares += (xi[j] - m) * (xi[j] - m);
    const T r = T(1) / std::sqrt(squares * inv_d + eps);
    mean[i] = m;
    rstd[i] = r;
    ln_write_row<T, KeepXhat>(xi, gamma, beta, m, r, KeepXhat ? xhat + i * d : xhat,
                              out + i * d, d);
  }
}

// Rows [begin, end) of layer_norm_rows compiled for the CPU's instruction set (haml/cpu_isa.h).
template <typename T, bool KeepXhat>
inline void layer_norm_row_range(const T* x, const T* gamma, const T* beta, T eps, T* mean, T* rstd,
                                 T* xhat, T* out, int64_t begin, int64_t end, int64_t d) {
  cpu::dispatch(HAML_KERNEL(layer_norm_rows<T, KeepXhat>), x + begin * d, gamma, beta, eps,
                mean + begin, rstd + begin, KeepXhat ? xhat + begin * d : xhat, out + begin * d,
                end - begin, d);
}

}  // namespace haml::detail
