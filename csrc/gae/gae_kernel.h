// The GAE recursion, shared by the CPU kernel, the CUDA kernel and the C++ tests.
// Plain C++ on raw pointers, row-major [T, B]; no ATen, no CUDA runtime.
#pragma once

#include <cstdint>

#include "haml/host_device.h"

namespace haml::detail {

// One step of the backward recursion (Schulman et al. 2016, eq. 16, with time limits):
//   delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)
//   A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1},   done_t = terminated_t or truncated_t
// next_adv is A_{t+1} (0 past the last step).
template <typename scalar_t>
HAML_HOST_DEVICE scalar_t gae_step(scalar_t reward, scalar_t value, scalar_t next_value,
                                   bool terminated, bool truncated, scalar_t next_adv,
                                   scalar_t gamma, scalar_t gamma_lam) {
  // Selects rather than multiplications by (1 - flag) or by gamma * lam = 0: a NaN or inf that
  // A_t does not depend on (beyond the episode's end, or any later step when lam = 0) must not
  // leak into it through 0 * NaN.
  const scalar_t bootstrap = terminated ? scalar_t(0) : gamma * next_value;
  const scalar_t delta = reward + bootstrap - value;
  const bool carries = !(terminated || truncated) && gamma_lam != scalar_t(0);
  return carries ? delta + gamma_lam * next_adv : delta;
}

// One row t of the scan over columns [0, len): the pointers are offset to the row and the
// column block. next_adv is row t + 1 of the advantages, or null on the last row (A_T = 0).
// The rows never overlap, hence __restrict, which lets the loop vectorise. The flags are read as
// bytes (bool storage): GCC does not vectorise loads of bool itself.
template <typename scalar_t>
inline void gae_row(const scalar_t* __restrict rewards, const scalar_t* __restrict values,
                    const scalar_t* __restrict next_values, const uint8_t* __restrict terminated,
                    const uint8_t* __restrict truncated, const scalar_t* __restrict next_adv,
                    int64_t len, scalar_t gamma, scalar_t gamma_lam,
                    scalar_t* __restrict advantages, scalar_t* __restrict returns) {
  for (int64_t j = 0; j < len; ++j) {
    const scalar_t carried = next_adv ? next_adv[j] : scalar_t(0);
    const scalar_t adv = gae_step<scalar_t>(rewards[j], values[j], next_values[j],
                                            terminated[j] != 0, truncated[j] != 0, carried, gamma,
                                            gamma_lam);
    advantages[j] = adv;
    returns[j] = adv + values[j];
  }
}

// The whole scan for columns [col_begin, col_end) of row-major [T, B] tensors: t runs backwards
// and each row is a contiguous, vectorised pass, so each input is read once.
template <typename scalar_t>
inline void gae_columns(const scalar_t* rewards, const scalar_t* values,
                        const scalar_t* next_values, const bool* terminated, const bool* truncated,
                        int64_t T, int64_t B, int64_t col_begin, int64_t col_end, scalar_t gamma,
                        scalar_t lam, scalar_t* advantages, scalar_t* returns) {
  const auto* term = reinterpret_cast<const uint8_t*>(terminated);
  const auto* trunc = reinterpret_cast<const uint8_t*>(truncated);
  const int64_t len = col_end - col_begin;
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t i = t * B + col_begin;
    const scalar_t* next_adv = t + 1 < T ? advantages + i + B : nullptr;
    gae_row<scalar_t>(rewards + i, values + i, next_values + i, term + i, trunc + i, next_adv,
                      len, gamma, gamma * lam, advantages + i, returns + i);
  }
}

}  // namespace haml::detail
