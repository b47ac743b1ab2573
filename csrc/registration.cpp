// The one place where haml's op schemas are declared. Device kernels register themselves beside
// their code with TORCH_LIBRARY_IMPL(haml, CPU/CUDA, m); fake (meta) kernels and autograd formulas
// are registered from Python (haml/ops/<op>/_meta.py) with torch.library.
#include <torch/library.h>

#include "haml/ops.h"

TORCH_LIBRARY(haml, m) {
  m.def(
      "gae(Tensor rewards, Tensor values, Tensor next_values, Tensor terminated, "
      "Tensor truncated, float gamma, float lam) -> (Tensor advantages, Tensor returns)");
  m.def(
      "clip_surrogate_fwd(Tensor logp_new, Tensor logp_old, Tensor advantages, Tensor? factor, "
      "Tensor? mask, Tensor? entropy, float? clip, float entropy_coef) -> (Tensor loss, "
      "Tensor clip_fraction, Tensor approx_kl, Tensor ratio_mean, Tensor weight_sum, "
      "Tensor ratio)");
  m.def(
      "clip_surrogate_bwd(Tensor grad_loss, Tensor ratio, Tensor advantages, Tensor? factor, "
      "Tensor? mask, Tensor weight_sum, float? clip, float entropy_coef, bool entropy_grad) "
      "-> (Tensor grad_logp_new, Tensor grad_entropy)");
}

namespace haml {
std::vector<std::string> native_op_names() {
  return {"gae", "clip_surrogate_fwd", "clip_surrogate_bwd"};
}
}  // namespace haml
