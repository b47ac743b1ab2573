// The one place where haml's op schemas are declared. Device kernels register themselves beside
// their code with TORCH_LIBRARY_IMPL(haml, CPU/CUDA, m); fake (meta) kernels and autograd formulas
// are registered from Python (haml/ops/<op>/_meta.py) with torch.library.
#include <torch/library.h>

#include "fvp/fisher_operator.h"
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
  m.def(
      "layer_norm_fwd(Tensor input, Tensor weight, Tensor bias, float eps) -> (Tensor out, "
      "Tensor mean, Tensor rstd)");
  // The exact Fisher-vector product of an MLP policy: a class, because its cached activations and
  // workspace live across the ~10 products of one conjugate-gradient solve.
  m.class_<haml::FisherOperator>("FisherOperator")
      .def(torch::init<at::Tensor, std::vector<at::Tensor>, std::optional<at::Tensor>,
                       std::optional<at::Tensor>, std::string, std::string, bool, bool, double,
                       double>(),
           "", {torch::arg("obs"), torch::arg("params"), torch::arg("mask"),
                torch::arg("action_mask"), torch::arg("head"), torch::arg("activation"),
                torch::arg("input_norm"), torch::arg("layer_norm"), torch::arg("layer_norm_eps"),
                torch::arg("damping")})
      .def("apply", &haml::FisherOperator::apply, "", {torch::arg("vector")})
      .def("apply_out",
           [](const c10::intrusive_ptr<haml::FisherOperator>& self, at::Tensor v,
              at::Tensor out) { self->apply_out(v, out); })
      .def("conjugate_gradient", &haml::FisherOperator::conjugate_gradient, "",
           {torch::arg("b"), torch::arg("iters"), torch::arg("residual_tol")})
      .def("last_solution_quadratic_form", &haml::FisherOperator::last_solution_quadratic_form)
      .def("num_params", &haml::FisherOperator::num_params)
      .def("head_output", &haml::FisherOperator::head_output)
      .def("output_vjp", &haml::FisherOperator::output_vjp, "", {torch::arg("grad_output")})
      .def("blocked_cpu_product", &haml::FisherOperator::blocked_cpu_product)
      .def("set_blocked_cpu_product", &haml::FisherOperator::set_blocked_cpu_product);
}

namespace haml {
std::vector<std::string> native_op_names() {
  return {"gae", "clip_surrogate_fwd", "clip_surrogate_bwd", "layer_norm_fwd"};
}
std::vector<std::string> native_class_names() {
  // Device-generic: written with ATen operations, they run wherever the tensors live.
  return {"FisherOperator"};
}
}  // namespace haml
