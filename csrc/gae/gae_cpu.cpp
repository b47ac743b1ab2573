// Native CPU GAE: parallel over batch columns with at::parallel_for.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
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
  detail::check_gae_args(rewards, values, next_values, terminated, truncated);
  const auto r = rewards.contiguous();
  const auto v = values.contiguous();
  const auto nv = next_values.contiguous();
  const auto term = terminated.contiguous();
  const auto trunc = truncated.contiguous();
  auto advantages = at::empty_like(r);
  auto returns = at::empty_like(r);
  const int64_t T = r.size(0);
  if (r.numel() == 0) return {advantages, returns};
  const int64_t B = r.numel() / T;

  AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "haml_gae_cpu", [&] {
    const auto* pr = r.const_data_ptr<scalar_t>();
    const auto* pv = v.const_data_ptr<scalar_t>();
    const auto* pnv = nv.const_data_ptr<scalar_t>();
    const auto* pterm = term.const_data_ptr<bool>();
    const auto* ptrunc = trunc.const_data_ptr<bool>();
    auto* padv = advantages.mutable_data_ptr<scalar_t>();
    auto* pret = returns.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, kGaeColumnGrain, [&](int64_t begin, int64_t end) {
      detail::gae_columns<scalar_t>(pr, pv, pnv, pterm, ptrunc, T, B, begin, end,
                                    static_cast<scalar_t>(gamma), static_cast<scalar_t>(lam),
                                    padv, pret);
    });
  });
  return {advantages, returns};
}

TORCH_LIBRARY_IMPL(haml, CPU, m) { m.impl("gae", &gae_cpu); }

}  // namespace haml
