// CPU kernel vs CUDA kernel on identical inputs, through the C++ entry points (built only with
// CUDA; skipped at run time on a machine without a GPU).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "haml/ops.h"

namespace {

bool have_cuda() { return at::hasCUDA(); }

at::Tensor bernoulli_flags(int64_t T, int64_t B, double p) {
  return at::rand({T, B}, at::kDouble) < p;
}

TEST(CudaParity, Gae) {
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(0);
  for (auto dtype : {at::kFloat, at::kDouble}) {
    const int64_t T = 37, B = 1031;
    auto opts = at::TensorOptions().dtype(dtype);
    auto r = at::randn({T, B}, opts), v = at::randn({T, B}, opts), nv = at::randn({T, B}, opts);
    auto term = bernoulli_flags(T, B, 0.05), trunc = bernoulli_flags(T, B, 0.05);
    auto [adv_cpu, ret_cpu] = haml::gae_cpu(r, v, nv, term, trunc, 0.99, 0.95);
    auto [adv_gpu, ret_gpu] = haml::gae_cuda(r.cuda(), v.cuda(), nv.cuda(), term.cuda(),
                                             trunc.cuda(), 0.99, 0.95);
    const double tol = dtype == at::kFloat ? 1e-5 : 1e-12;
    EXPECT_TRUE(at::allclose(adv_cpu, adv_gpu.cpu(), tol, tol));
    EXPECT_TRUE(at::allclose(ret_cpu, ret_gpu.cpu(), tol, tol));
  }
}

TEST(CudaParity, ClipSurrogate) {
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(0);
  for (auto dtype : {at::kFloat, at::kDouble}) {
    const int64_t n = 70001;  // more than one block of partial sums, not a multiple of 256
    auto opts = at::TensorOptions().dtype(dtype);
    auto logp_new = at::randn({n}, opts), logp_old = logp_new + 0.3 * at::randn({n}, opts);
    auto adv = at::randn({n}, opts), factor = at::rand({n}, opts) + 0.5;
    auto mask = (at::rand({n}, opts) < 0.8).to(dtype), ent = at::rand({n}, opts);
    for (std::optional<double> clip : {std::optional<double>(0.2), std::optional<double>()}) {
      auto cpu = haml::clip_surrogate_fwd_cpu(logp_new, logp_old, adv, factor, mask, ent, clip, 0.01);
      auto gpu = haml::clip_surrogate_fwd_cuda(logp_new.cuda(), logp_old.cuda(), adv.cuda(),
                                               factor.cuda(), mask.cuda(), ent.cuda(), clip, 0.01);
      const double tol = dtype == at::kFloat ? 1e-5 : 1e-12;
      EXPECT_TRUE(at::allclose(std::get<0>(cpu), std::get<0>(gpu).cpu(), tol, tol));
      EXPECT_TRUE(at::allclose(std::get<1>(cpu), std::get<1>(gpu).cpu(), tol, tol));
      EXPECT_TRUE(at::allclose(std::get<2>(cpu), std::get<2>(gpu).cpu(), tol, tol));
      EXPECT_TRUE(at::allclose(std::get<3>(cpu), std::get<3>(gpu).cpu(), tol, tol));
      EXPECT_TRUE(at::allclose(std::get<5>(cpu), std::get<5>(gpu).cpu(), tol, tol));
      auto grad = at::ones({}, opts);
      auto bcpu = haml::clip_surrogate_bwd_cpu(grad, std::get<5>(cpu), adv, factor, mask,
                                               std::get<4>(cpu), clip, 0.01, true);
      auto bgpu = haml::clip_surrogate_bwd_cuda(grad.cuda(), std::get<5>(gpu), adv.cuda(),
                                                factor.cuda(), mask.cuda(), std::get<4>(gpu), clip,
                                                0.01, true);
      EXPECT_TRUE(at::allclose(std::get<0>(bcpu), std::get<0>(bgpu).cpu(), tol, tol));
      EXPECT_TRUE(at::allclose(std::get<1>(bcpu), std::get<1>(bgpu).cpu(), tol, tol));
    }
  }
}

TEST(CudaParity, LayerNorm) {
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(0);
  for (auto dtype : {at::kFloat, at::kDouble}) {
    auto opts = at::TensorOptions().dtype(dtype);
    for (int64_t d : {1, 31, 64, 257}) {
      auto x = at::randn({1003, d}, opts) + 2.0, w = at::randn({d}, opts), b = at::randn({d}, opts);
      auto [out_cpu, mean_cpu, rstd_cpu] = haml::layer_norm_fwd_cpu(x, w, b, 1e-5);
      auto [out_gpu, mean_gpu, rstd_gpu] = haml::layer_norm_fwd_cuda(x.cuda(), w.cuda(), b.cuda(), 1e-5);
      const double tol = dtype == at::kFloat ? 1e-5 : 1e-12;
      EXPECT_TRUE(at::allclose(out_cpu, out_gpu.cpu(), tol, tol)) << "d = " << d;
      EXPECT_TRUE(at::allclose(mean_cpu, mean_gpu.cpu(), tol, tol)) << "d = " << d;
      EXPECT_TRUE(at::allclose(rstd_cpu, rstd_gpu.cpu(), tol, tol)) << "d = " << d;
    }
  }
}

}  // namespace
