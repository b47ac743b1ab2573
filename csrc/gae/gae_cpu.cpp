// Native CPU GAE: parallel over batch columns with at::parallel_for.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "gae_kernel.h"
#include "gae_checks.h"
#include "haml/ops.h"

namespace haml {

namespace {
// Below this many columns per task, thread start-up costs more than it saves.
constexpr int64_t kGaeColumnGrain = 256;
}  // namespace

std::tuple<at::Tensor, at::Tensor> gae_cpu(const at::Tensor& rewards, const at::Tensor& values,
                                           const at::Tensor& next_values,
                                           const at::Tensor& terminated,
                                           const at::Tensor& truncated, double gamma, double lam) {
  auto call = detail::prepare_gae(rewards, values, next_values, terminated, truncated, gamma,
                                   lam);
  const int64_t T = call.T, B = call.B;
  if (T == 0 || B == 0) return {call.advantages, call.returns};

  AT_DISPATCH_FLOATING_TYPES(call.rewards.scalar_type(), "haml_gae_cpu", [&] {
    const auto* pr = call.rewards.const_data_ptr<scalar_t>();
    const auto* pv = call.values.const_data_ptr<scalar_t>();
    const auto* pnv = call.next_values.const_data_ptr<scalar_t>();
    const auto* pterm = call.terminated.const_data_ptr<bool>();
    const auto* ptrunc = call.truncated.const_data_ptr<bool>();
    auto* padv = call.advantages.mutable_data_ptr<scalar_t>();
    auto* pret = call.returns.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, kGaeColumnGrain, [&](int64_t begin, int64_t end) {
      detail::gae_columns<scalar_t>(pr, pv, pnv, pterm, ptrunc, T, B, begin, end,
                                    static_cast<scalar_t>(gamma), static_cast<scalar_t>(lam),
                                    padv, pret);
    });
  });
  return {call.advantages, call.returns};
}

TORCH_LIBRARY_IMPL(haml, CPU, m) { m.impl("gae", &gae_cpu); }

}  // namespace haml
