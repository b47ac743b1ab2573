// The exact Fisher-vector product of an MLP policy in Gauss–Newton form, with the activations
// cached once per operator and every buffer allocated once ([HATRPO], Algorithm 2, line 11).
//
//   (F + damping I) v,   F = Σ_n w_n J_nᵀ M_n J_n / Σ_n w_n
//
// J_n is the Jacobian of the distribution's parameters at sample n with respect to θ, and M_n the
// Hessian of KL(π_old ‖ π) with respect to them at π = π_old: diag(1/σ²) on the Gaussian means,
// 2·I on the state-independent log-stds, diag(p) − ppᵀ on categorical logits. One product is a
// tangent pass (J v, forward mode) and a transposed pass (Jᵀ u, reverse mode) through the cached
// network. On the CPU a product runs block by block of samples, each block through both passes
// while it stays in cache (fisher_cpu.h); elsewhere it is a sequence of ATen GEMMs and
// elementwise operations over all samples, so the same operator runs on CUDA tensors.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/custom_class.h>

#include "fisher_cpu.h"

#include <optional>
#include <string>
#include <vector>

namespace haml {

class FisherOperator : public torch::CustomClassHolder {
 public:
  // params: the policy's trainable parameters in named_parameters() order (haml.models.MLPPolicy):
  //   log_std [A]                      if head == "gaussian" (a direct parameter comes first)
  //   [input LayerNorm weight, bias]  if input_norm
  //   per hidden layer: Linear weight [d_out, d_in], bias; [LayerNorm weight, bias] if layer_norm
  //   head Linear weight [A, d], bias [A]
  // mask: per-sample weights [N] (or none); action_mask: [N, A] availability (categorical only).
  // head == "linear": a network with a plain Linear output and no distribution (a value network,
  // haml.models.VCritic). It has no Fisher metric: such an operator serves head_output and
  // output_vjp (the network's cached forward and its transposed pass), and refuses products.
  FisherOperator(const at::Tensor& obs, std::vector<at::Tensor> params,
                 const std::optional<at::Tensor>& mask,
                 const std::optional<at::Tensor>& action_mask, const std::string& head,
                 const std::string& activation, bool input_norm, bool layer_norm,
                 double layer_norm_eps, double damping);

  // (F + damping I) v into a new tensor.
  at::Tensor apply(const at::Tensor& v);
  // (F + damping I) v into out, allocating nothing.
  void apply_out(const at::Tensor& v, at::Tensor& out);
  // x ≈ (F + damping I)⁻¹ b by at most iters conjugate-gradient steps, stopping once r·r is
  // at most residual_tol (the iteration of haml/ops/fvp/cg.py).
  at::Tensor conjugate_gradient(const at::Tensor& b, int64_t iters, double residual_tol);
  // xᵀ(F + damping I)x of the last conjugate_gradient solution x, read off its recurrence as
  // xᵀ(b − r) (r = b − A x): the step size of HATRPO without one more product.
  at::Tensor last_solution_quadratic_form() const;
  int64_t num_params() const { return num_params_; }
  // The head's output at θ_old from the cached forward pass, [N, A]: the Gaussian mean, or the
  // categorical logits before the action mask.
  at::Tensor head_output() const { return head_output_; }
  // Jᵀ g for g [N, A] at the head's output: the flat gradient over the parameters of
  // Σ_n g_n · head_n(θ), with a zero log-std block (the log-std does not enter the head).
  // One transposed pass: the surrogate's gradient at θ_old without a new forward.
  at::Tensor output_vjp(const at::Tensor& grad_output);
  // Whether the CPU's blocked product runs (the default on CPU) or the ATen sequence (the only
  // choice elsewhere). The switch exists so that tests can compare the two.
  bool blocked_cpu_product() const { return blocked_cpu_; }
  void set_blocked_cpu_product(bool blocked);

 private:
  struct Linear {
    at::Tensor weight, bias;  // the parameters (read at construction: θ_old)
    int64_t weight_offset, bias_offset, in_dim, out_dim;
  };
  struct Norm {
    at::Tensor weight, bias;            // γ, β
    int64_t weight_offset, bias_offset, dim;
    at::Tensor input, mean, rstd;       // cached input [N, d], its row means and 1/σ [N, 1]
    at::Tensor xhat;                    // cached normalised input [N, d]
  };
  struct Hidden {
    Linear linear;
    at::Tensor input;                   // h_{l-1} [N, d_in]
    at::Tensor act_grad;                // φ'(z) [N, d_out]
    std::optional<Norm> norm;
    at::Tensor tangent, tangent_norm;   // ATen-sequence workspace [N, d_out]
  };

  void aten_product(const at::Tensor& vc, at::Tensor& out);
  void transposed_pass(const at::Tensor& u, at::Tensor& out);
  void build_cpu_network();
  void allocate_aten_workspace();
  void cpu_tangents(const at::Tensor& vc);
  const Linear& after_input_norm() const;
  at::Tensor fold_input_norm_tangent(const at::Tensor& vc);
  void fold_input_norm_transposed(at::Tensor& out);
  void norm_jvp(const Norm& norm, const at::Tensor& v, const at::Tensor& dx, at::Tensor& y);
  void norm_vjp(const Norm& norm, const at::Tensor& g, at::Tensor& out, at::Tensor& gx);
  at::Tensor param_view(const at::Tensor& flat, int64_t offset, at::IntArrayRef shape) const;
  void check_parameters_unchanged() const;

  // The parameters as given and their version counters at construction: the cached activations
  // belong to those values, so a product after an in-place update is refused.
  std::vector<at::Tensor> params_;
  std::vector<int64_t> param_versions_;
  bool gaussian_;
  bool linear_;  // no distribution: no metric, no products
  bool blocked_cpu_ = false;
  double damping_;
  int64_t num_params_ = 0;
  int64_t n_ = 0;
  int64_t max_width_ = 0;  // the widest layer input or output (the observations included)
  std::optional<Norm> input_norm_;
  std::vector<Hidden> hidden_;
  Linear head_;
  at::Tensor head_input_;               // h_L [N, d]
  at::Tensor head_output_;              // the head's output [N, A]
  int64_t log_std_offset_ = -1;
  at::Tensor weight_sum_positive_;      // 1 if Σ w > 0 else 0 (0-d): the log-std block's factor
  // The head's workspace and per-sample factors are [A, N] (outputs × samples):
  at::Tensor scale_;                    // Gaussian: w_n / (Σw σ²) [A, N]; categorical: w_n / Σw [1, N]
  at::Tensor probs_;                    // categorical π_old [A, N]
  // workspace: head_tangent_ [A, N] always; the rest for the ATen sequence only
  at::Tensor head_tangent_, row_a_, tmp_, grad_a_, grad_b_, scratch_, ones_;
  // The input LayerNorm is folded into the Linear after it (fold_input_norm_tangent): the
  // folded [out, in] weight tangent, its bias term and the weight gradient G.
  at::Tensor fold_weight_, fold_bias_, fold_grad_;
  // The CPU's blocked product: the network as it sees it, the tangents of the current product
  // (views of v), and its workspace. Its gradient space is the output, then fold_grad_.
  std::vector<fvp_cpu::Layer> cpu_hidden_;
  fvp_cpu::Layer cpu_head_;
  fvp_cpu::HeadMetric cpu_metric_;
  std::vector<fvp_cpu::LayerTangent> cpu_d_hidden_;
  fvp_cpu::LayerTangent cpu_d_head_;
  fvp_cpu::BlockedProduct blocked_;
  at::Tensor fold_grad_flat_;
  at::Tensor cg_x_, cg_r_, cg_p_, cg_ap_, cg_x_ax_;
};

}  // namespace haml
