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
  const scalar_t not_terminated = terminated ? scalar_t(0) : scalar_t(1);
  const scalar_t not_done = (terminated || truncated) ? scalar_t(0) : scalar_t(1);
  const scalar_t delta = reward + gamma * not_terminated * next_value - value;
  return delta + gamma_lam * not_done * next_adv;
}

// The whole scan for columns [col_begin, col_end). t runs backwards and the inner loop over
// contiguous columns, so it vectorises and each row of each input is read once.
template <typename scalar_t>
inline void gae_columns(const scalar_t* rewards, const scalar_t* values,
                        const scalar_t* next_values, const bool* terminated, const bool* truncated,
                        int64_t T, int64_t B, int64_t col_begin, int64_t col_end, scalar_t gamma,
                        scalar_t lam, scalar_t* advantages, scalar_t* returns) {
  const scalar_t gamma_lam = gamma * lam;
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t row = t * B;
    // A_T = 0: nothing is carried into the last row.
    const bool has_next = t + 1 < T;
    for (int64_t j = col_begin; j < col_end; ++j) {
      const int64_t i = row + j;
      const scalar_t next_adv = has_next ? advantages[i + B] : scalar_t(0);
      const scalar_t adv = gae_step<scalar_t>(rewards[i], values[i], next_values[i],
                                              terminated[i], truncated[i], next_adv, gamma,
                                              gamma_lam);
      advantages[i] = adv;
      returns[i] = adv + values[i];
    }
  }
}

}  // namespace haml::detail
