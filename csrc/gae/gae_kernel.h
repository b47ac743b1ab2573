// The GAE recursion, shared by the CPU kernel, the CUDA kernel and the C++ tests.
// Plain C++ on raw pointers, row-major [T, B]; no ATen, no CUDA runtime.
#pragma once

#include <cstdint>

#include "haml/cpu_isa.h"
#include "haml/host_device.h"
#include "haml/vectorize.h"

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
// column block. carry holds A_{t+1} of these columns on entry (0 past the last step) and A_t on
// exit. Keeping A_{t+1} in this small buffer rather than re-reading row t + 1 of the output avoids
// loads that sit exactly one row (often 4 KiB) behind a store, which the CPU's memory
// disambiguation mistakes for a dependency. The rows never overlap, hence __restrict, which lets
// the loop vectorise. The flags are read as bytes (bool storage): GCC does not vectorise loads of
// bool itself.
template <typename scalar_t>
HAML_KERNEL_BODY void gae_row(const scalar_t* __restrict rewards, const scalar_t* __restrict values,
                              const scalar_t* __restrict next_values,
                              const uint8_t* __restrict terminated,
                              const uint8_t* __restrict truncated, scalar_t* __restrict carry,
                              int64_t len, scalar_t gamma, scalar_t gamma_lam,
                              scalar_t* __restrict advantages, scalar_t* __restrict returns) {
  // gae_step with its selects written as bit masks (keep_if), which vectorise: same values.
  const bool lam_carries = gamma_lam != scalar_t(0);
  for (int64_t j = 0; j < len; ++j) {
    const bool not_terminated = terminated[j] == 0;
    const bool carries = not_terminated & (truncated[j] == 0) & lam_carries;
    const scalar_t delta =
        rewards[j] + keep_if(gamma * next_values[j], not_terminated) - values[j];
    const scalar_t adv = delta + keep_if(gamma_lam * carry[j], carries);
    carry[j] = adv;
    advantages[j] = adv;
    returns[j] = adv + values[j];
  }
}

// Columns per tile: a tile's carry buffer stays in L1 while its rows stream past.
constexpr int64_t kGaeTile = 512;

// The whole scan for columns [col_begin, col_end) of row-major [T, B] tensors, tile by tile: t runs
// backwards and each row of a tile is one contiguous, vectorised pass, so each input is read once.
template <typename scalar_t>
HAML_KERNEL_BODY void gae_columns_body(const scalar_t* rewards, const scalar_t* values,
                                       const scalar_t* next_values, const bool* terminated,
                                       const bool* truncated, int64_t T, int64_t B,
                                       int64_t col_begin, int64_t col_end, scalar_t gamma,
                                       scalar_t lam, scalar_t* advantages, scalar_t* returns) {
  const auto* term = reinterpret_cast<const uint8_t*>(terminated);
  const auto* trunc = reinterpret_cast<const uint8_t*>(truncated);
  alignas(64) scalar_t carry[kGaeTile];
  for (int64_t tile = col_begin; tile < col_end; tile += kGaeTile) {
    const int64_t len = col_end - tile < kGaeTile ? col_end - tile : kGaeTile;
    for (int64_t j = 0; j < len; ++j) carry[j] = scalar_t(0);  // A_T = 0
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t i = t * B + tile;
      gae_row<scalar_t>(rewards + i, values + i, next_values + i, term + i, trunc + i, carry, len,
                        gamma, gamma * lam, advantages + i, returns + i);
    }
  }
}

// gae_columns_body compiled for the CPU's instruction set (haml/cpu_isa.h).
template <typename scalar_t>
inline void gae_columns(const scalar_t* rewards, const scalar_t* values,
                        const scalar_t* next_values, const bool* terminated, const bool* truncated,
                        int64_t T, int64_t B, int64_t col_begin, int64_t col_end, scalar_t gamma,
                        scalar_t lam, scalar_t* advantages, scalar_t* returns) {
  cpu::dispatch(HAML_KERNEL(gae_columns_body<scalar_t>), rewards, values, next_values, terminated,
                truncated, T, B, col_begin, col_end, gamma, lam, advantages, returns);
}

}  // namespace haml::detail
