// See fisher_operator.h. Every ATen call here writes into a buffer allocated by the constructor
// (an *_out function or an in-place method); a product allocates no tensor memory.
#include "fisher_operator.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace haml {

namespace {

constexpr const char* kOp = "FisherOperator";

at::Tensor flat_buffer_view(const at::Tensor& buffer, int64_t rows, int64_t cols) {
  return buffer.narrow(0, 0, rows * cols).view({rows, cols});
}

}  // namespace

at::Tensor FisherOperator::param_view(const at::Tensor& flat, int64_t offset,
                                      at::IntArrayRef shape) const {
  int64_t numel = 1;
  for (auto s : shape) numel *= s;
  return flat.narrow(0, offset, numel).view(shape);
}

FisherOperator::FisherOperator(const at::Tensor& obs_in, std::vector<at::Tensor> params,
                               const std::optional<at::Tensor>& mask,
                               const std::optional<at::Tensor>& action_mask,
                               const std::string& head, const std::string& activation,
                               bool input_norm, bool layer_norm, double layer_norm_eps,
                               double damping) {
  at::NoGradGuard no_grad;
  TORCH_CHECK(head == "gaussian" || head == "categorical" || head == "linear", kOp,
              ": 'head' must be \"gaussian\", \"categorical\" or \"linear\", got \"", head, "\"");
  TORCH_CHECK(activation == "tanh" || activation == "relu", kOp,
              ": 'activation' must be \"tanh\" or \"relu\", got \"", activation, "\"");
  TORCH_CHECK(damping >= 0.0 && std::isfinite(damping), kOp,
              ": 'damping' must be finite and >= 0, got ", damping);
  TORCH_CHECK(obs_in.dim() == 2 && obs_in.size(0) > 0, kOp,
              ": 'obs' must be [N, obs_dim] with N >= 1, got ", obs_in.sizes());
  TORCH_CHECK(obs_in.scalar_type() == at::kFloat || obs_in.scalar_type() == at::kDouble, kOp,
              ": 'obs' must be float32 or float64, got ", obs_in.scalar_type());
  gaussian_ = head == "gaussian";
  linear_ = head == "linear";
  TORCH_CHECK(!linear_ || !action_mask.has_value(), kOp,
              ": 'action_mask' applies only to a categorical head");
  damping_ = damping;
  const bool tanh = activation == "tanh";
  const bool cpu = obs_in.device().is_cpu();
  const auto options = obs_in.options();
  n_ = obs_in.size(0);

  // The number of hidden layers follows from the parameter count of the documented layout.
  const int64_t fixed = (input_norm ? 2 : 0) + 2 + (gaussian_ ? 1 : 0);
  const int64_t per_layer = 2 + (layer_norm ? 2 : 0);
  const int64_t count = static_cast<int64_t>(params.size());
  TORCH_CHECK(count >= fixed && (count - fixed) % per_layer == 0, kOp, ": got ", count,
              " parameters, which does not match the MLP layout for head=", head,
              ", input_norm=", input_norm, ", layer_norm=", layer_norm);
  const int64_t num_hidden = (count - fixed) / per_layer;

  size_t next = 0;
  int64_t offset = 0;
  auto take = [&](const char* what, std::vector<int64_t> shape) -> std::pair<at::Tensor, int64_t> {
    const at::Tensor p = params[next++].detach();
    TORCH_CHECK(p.scalar_type() == obs_in.scalar_type() && p.device() == obs_in.device(), kOp,
                ": parameter ", next - 1, " (", what, ") must have the dtype and device of 'obs'");
    TORCH_CHECK(p.sizes() == at::IntArrayRef(shape), kOp, ": parameter ", next - 1, " (", what,
                ") must have shape ", at::IntArrayRef(shape), ", got ", p.sizes());
    const int64_t at = offset;
    offset += p.numel();
    return {p.contiguous(), at};
  };
  auto make_norm = [&](const at::Tensor& x, int64_t dim) -> std::pair<Norm, at::Tensor> {
    Norm norm;
    auto [weight, w_off] = take("LayerNorm weight", {dim});
    auto [bias, b_off] = take("LayerNorm bias", {dim});
    norm.weight = weight;
    norm.bias = bias;
    norm.weight_offset = w_off;
    norm.bias_offset = b_off;
    norm.dim = dim;
    norm.input = x;
    if (cpu) {
      norm.mean = at::empty({n_, 1}, options);
      norm.rstd = at::empty({n_, 1}, options);
      norm.xhat = at::empty_like(x);
      at::Tensor out = at::empty_like(x);
      fvp_cpu::layer_norm_forward(x, weight, bias, layer_norm_eps, norm.mean, norm.rstd,
                                  norm.xhat, out);
      return {norm, out};
    }
    // nn.LayerNorm's own forward, so that the saved mean and 1/σ are the ones its fused
    // backward kernel (used by the ATen passes below) expects.
    auto [out, mean, rstd] = at::native_layer_norm(x, {dim}, weight, bias, layer_norm_eps);
    norm.mean = mean;
    norm.rstd = rstd;
    norm.xhat = (x - mean) * rstd;
    return {norm, out};
  };

  at::Tensor log_std;
  if (gaussian_) {
    const at::Tensor first = params[0];
    TORCH_CHECK(first.dim() == 1, kOp, ": parameter 0 (log_std) must be 1-d, got ",
                first.sizes());
    auto [p, p_off] = take("log_std", {first.size(0)});
    log_std = p;
    log_std_offset_ = p_off;
  }
  // Per-sample weights. A sample of weight 0 takes no part in the product, even where its
  // observation is not finite: such entries are read as 0 (the rule of every haml op), so that no
  // 0 · NaN reaches a sum over samples.
  at::Tensor weights;
  at::Tensor obs = obs_in;
  if (mask.has_value()) {
    TORCH_CHECK(mask->dim() == 1 && mask->size(0) == n_, kOp, ": 'mask' must be [N] = [", n_,
                "], got ", mask->sizes());
    TORCH_CHECK(mask->device() == obs_in.device(), kOp, ": 'mask' is on ", mask->device(),
                " but 'obs' is on ", obs_in.device());
    weights = mask->to(options);
    const auto active = (weights != 0).unsqueeze(1);
    obs = at::where(active.logical_or(at::isfinite(obs_in)), obs_in, at::zeros({}, options));
  } else {
    weights = at::ones({n_}, options);
  }

  at::Tensor h = obs.contiguous();
  int64_t width = h.size(1);
  {
    // The first layer's input width, so that a wrong observation width names 'obs'.
    const at::Tensor& first = params[next];
    const int64_t expected = input_norm ? first.size(0) : (first.dim() == 2 ? first.size(1) : width);
    TORCH_CHECK(first.dim() >= 1 && expected == width, kOp, ": 'obs' has ", width,
                " features per sample but the policy's first layer takes ", expected);
  }
  max_width_ = std::max<int64_t>(width, 1);
  if (input_norm) {
    auto [norm, out] = make_norm(h, width);
    input_norm_ = norm;
    h = out;
  }
  for (int64_t l = 0; l < num_hidden; ++l) {
    const at::Tensor weight = params[next];
    TORCH_CHECK(weight.dim() == 2, kOp, ": parameter ", next, " (Linear weight) must be 2-d");
    const int64_t out_dim = weight.size(0);
    Hidden layer;
    auto [w, w_off] = take("Linear weight", {out_dim, width});
    auto [b, b_off] = take("Linear bias", {out_dim});
    layer.linear = Linear{w, b, w_off, b_off, width, out_dim};
    layer.input = h;
    at::Tensor z = at::addmm(b, h, w.t());
    at::Tensor a;
    if (cpu) {
      // z becomes the activation in place, with φ' beside it: one pass each.
      layer.act_grad = at::empty_like(z);
      if (tanh) {
        z.tanh_();
        fvp_cpu::tanh_grad(z, layer.act_grad);
      } else {
        fvp_cpu::relu_forward(z, layer.act_grad);
      }
      a = z;
    } else if (tanh) {
      a = z.tanh();
      layer.act_grad = 1 - a * a;  // tanh' = 1 - tanh²
    } else {
      a = z.relu();
      layer.act_grad = (z > 0).to(z.scalar_type());  // autograd's ReLU: 0 at z = 0
    }
    if (layer_norm) {
      auto [norm, out] = make_norm(a, out_dim);
      layer.norm = norm;
      h = out;
    } else {
      h = a;
    }
    width = out_dim;
    max_width_ = std::max(max_width_, width);
    hidden_.push_back(std::move(layer));
  }
  const at::Tensor head_weight = params[next];
  TORCH_CHECK(head_weight.dim() == 2, kOp, ": parameter ", next, " (head weight) must be 2-d");
  const int64_t num_out = head_weight.size(0);
  auto [hw, hw_off] = take("head weight", {num_out, width});
  auto [hb, hb_off] = take("head bias", {num_out});
  head_ = Linear{hw, hb, hw_off, hb_off, width, num_out};
  head_input_ = h;
  const auto out = at::addmm(hb, h, hw.t());
  head_output_ = out;
  max_width_ = std::max(max_width_, num_out);

  // w_n / Σ w, without a host sync: where Σ w = 0 every w_n is 0 too, and dividing by 1 instead
  // keeps them 0 (a clamp at a tiny positive double would underflow to 0 in float32: 0/0).
  const auto weight_sum = weights.sum();
  weight_sum_positive_ = (weight_sum > 0).to(options.dtype());
  const auto sample_scale =
      (weights / at::where(weight_sum != 0, weight_sum, at::ones({}, options))).unsqueeze(1);

  if (gaussian_) {
    TORCH_CHECK(!action_mask.has_value(), kOp, ": 'action_mask' applies only to a categorical head");
    TORCH_CHECK(log_std.size(0) == num_out, kOp, ": log_std has ", log_std.size(0),
                " entries but the head ", num_out, " outputs");
    // w_n / (Σ w σ²), in the head's [A, N] layout
    scale_ = (sample_scale * (-2 * log_std).exp()).t().contiguous();
  } else if (linear_) {
    // No metric: apply_out and conjugate_gradient refuse such an operator.
    scale_ = sample_scale.view({1, n_});
  } else {
    at::Tensor probs;
    if (action_mask.has_value()) {
      TORCH_CHECK(action_mask->sizes() == out.sizes(), kOp, ": 'action_mask' must be ",
                  out.sizes(), ", got ", action_mask->sizes());
      TORCH_CHECK(action_mask->device() == out.device(), kOp, ": 'action_mask' is on ",
                  action_mask->device(), " but 'obs' is on ", out.device());
      const auto available = action_mask->scalar_type() == at::kBool ? *action_mask
                                                                     : (*action_mask != 0);
      // As haml.models.masked_logits: unavailable actions get probability exactly 0.
      const auto logits = out.masked_fill(available.logical_not(),
                                          at::Scalar(out.scalar_type() == at::kFloat
                                                         ? std::numeric_limits<float>::lowest()
                                                         : std::numeric_limits<double>::lowest()));
      // A row with no available action is uniform over all actions whatever θ is (the policy's
      // rule), so its KL and its block of F are 0: p = 0 there makes diag(p) − ppᵀ vanish.
      probs = logits.softmax(-1) * available.any(-1, true).to(options.dtype());
    } else {
      probs = out.softmax(-1);
    }
    probs_ = probs.t().contiguous();  // [A, N]
    scale_ = sample_scale.view({1, n_});           // w_n / Σ w
  }
  TORCH_CHECK(next == params.size(), kOp, ": ", params.size() - next, " parameters left over");
  for (const auto& p : params) param_versions_.push_back(p._version());
  params_ = std::move(params);
  num_params_ = offset;

  head_tangent_ = at::empty({num_out, n_}, options);
  cg_x_ = at::empty({num_params_}, options);
  cg_r_ = at::empty({num_params_}, options);
  cg_p_ = at::empty({num_params_}, options);
  cg_ap_ = at::empty({num_params_}, options);
  if (input_norm_) {
    const Linear& first = after_input_norm();
    fold_weight_ = at::empty({first.out_dim, first.in_dim}, options);
    fold_grad_ = at::empty({first.out_dim, first.in_dim}, options);
    fold_bias_ = at::empty({first.out_dim}, options);
    fold_grad_flat_ = fold_grad_.view({-1});
  }
  blocked_cpu_ = cpu;
  if (blocked_cpu_) {
    build_cpu_network();
  } else {
    allocate_aten_workspace();
  }
}

// The buffers of the ATen sequence, [N, width] each: on the CPU only if a test asks for it.
void FisherOperator::allocate_aten_workspace() {
  if (grad_a_.defined()) return;
  const auto options = head_.weight.options();
  for (auto& layer : hidden_) {
    layer.tangent = at::empty({n_, layer.linear.out_dim}, options);
    if (layer.norm) layer.tangent_norm = at::empty({n_, layer.linear.out_dim}, options);
  }
  row_a_ = at::empty({1, n_}, options);
  tmp_ = at::empty({n_ * max_width_}, options);
  scratch_ = at::empty({2 * max_width_}, options);
  ones_ = at::ones({max_width_}, options);
  grad_a_ = at::empty({n_ * max_width_}, options);
  grad_b_ = at::empty({n_ * max_width_}, options);
}

void FisherOperator::set_blocked_cpu_product(bool blocked) {
  TORCH_CHECK(!blocked || head_.weight.device().is_cpu(), kOp,
              ": the blocked product is a CPU kernel; this operator's tensors are on ",
              head_.weight.device());
  if (!blocked) allocate_aten_workspace();
  blocked_cpu_ = blocked;  // a CPU operator built its blocked product in the constructor
}

// The network as the blocked CPU product sees it. The Linear after the input LayerNorm reads x̂
// and writes its weight block to G (fold_grad_, the gradient space after the output), from which
// fold_input_norm_transposed derives the blocks of both.
void FisherOperator::build_cpu_network() {
  auto as_layer = [&](const Linear& lin, const at::Tensor& input, bool folded) {
    fvp_cpu::Layer layer;
    layer.input = folded ? input_norm_->xhat : input;
    layer.weight = lin.weight;
    layer.grad_weight = folded ? num_params_ : lin.weight_offset;
    layer.grad_bias = lin.bias_offset;
    return layer;
  };
  for (const auto& hidden : hidden_) {
    const bool folded = input_norm_ && &hidden == &hidden_.front();
    fvp_cpu::Layer layer = as_layer(hidden.linear, hidden.input, folded);
    layer.act_grad = hidden.act_grad;
    if (hidden.norm) {
      layer.xhat = hidden.norm->xhat;
      layer.rstd = hidden.norm->rstd;
      layer.gamma = hidden.norm->weight;
      layer.grad_gamma = hidden.norm->weight_offset;
      layer.grad_beta = hidden.norm->bias_offset;
    }
    cpu_hidden_.push_back(std::move(layer));
  }
  cpu_head_ = as_layer(head_, head_input_, input_norm_ && hidden_.empty());
  cpu_metric_ = fvp_cpu::HeadMetric{gaussian_, scale_, probs_};
  cpu_d_hidden_.resize(hidden_.size());
  const int64_t grad_size = num_params_ + (input_norm_ ? fold_grad_.numel() : 0);
  blocked_ = fvp_cpu::BlockedProduct(n_, max_width_, head_.out_dim, grad_size,
                                     head_.weight.options());
}

// The tangents of the current product for the blocked CPU product: views of v, except for the
// Linear after the input LayerNorm, whose folded tangent fold_input_norm_tangent computes.
void FisherOperator::cpu_tangents(const at::Tensor& vc) {
  auto linear_tangent = [&](const Linear& lin, bool folded) {
    fvp_cpu::LayerTangent d;
    if (folded) {
      d.d_bias = fold_input_norm_tangent(vc);
      d.d_weight = fold_weight_;
    } else {
      d.d_weight = param_view(vc, lin.weight_offset, {lin.out_dim, lin.in_dim});
      d.d_bias = param_view(vc, lin.bias_offset, {lin.out_dim});
    }
    return d;
  };
  for (size_t l = 0; l < hidden_.size(); ++l) {
    const Hidden& hidden = hidden_[l];
    cpu_d_hidden_[l] = linear_tangent(hidden.linear, input_norm_ && l == 0);
    if (hidden.norm) {
      cpu_d_hidden_[l].d_gamma = param_view(vc, hidden.norm->weight_offset, {hidden.norm->dim});
      cpu_d_hidden_[l].d_beta = param_view(vc, hidden.norm->bias_offset, {hidden.norm->dim});
    }
  }
  cpu_d_head_ = linear_tangent(head_, input_norm_ && hidden_.empty());
}

// LayerNorm's Jacobian is diag(γ) · Ĵ with Ĵ = rstd (I − 11ᵀ/d − x̂x̂ᵀ/d) symmetric, so both passes
// use ATen's fused LayerNorm backward kernel: Ĵ·dx is its input gradient with no weight.
// Tangent: y = γ ⊙ Ĵ dx + x̂ ⊙ dγ + dβ.
void FisherOperator::norm_jvp(const Norm& norm, const at::Tensor& v, const at::Tensor& dx,
                              at::Tensor& y) {
  const auto d_weight = param_view(v, norm.weight_offset, {norm.dim});
  const auto d_bias = param_view(v, norm.bias_offset, {norm.dim});
  // The out= form takes every output (a partial output mask is refused): the two parameter
  // sums land in scratch space.
  auto scratch_weight = scratch_.narrow(0, 0, norm.dim);
  auto scratch_bias = scratch_.narrow(0, norm.dim, norm.dim);
  // A weight of ones (the kernel wants one when it sums the parameter gradients) keeps γ out.
  const auto ones = ones_.narrow(0, 0, norm.dim);
  at::native_layer_norm_backward_out(y, scratch_weight, scratch_bias, dx, norm.input, {norm.dim},
                                     norm.mean, norm.rstd, ones, norm.bias, {true, true, true});
  y.mul_(norm.weight).addcmul_(norm.xhat, d_weight).add_(d_bias);
}

// Transposed: writes Σ_n g ⊙ x̂ and Σ_n g (the γ, β blocks) into out and gx = Ĵ (γ ⊙ g):
// exactly LayerNorm's backward.
void FisherOperator::norm_vjp(const Norm& norm, const at::Tensor& g, at::Tensor& out,
                              at::Tensor& gx) {
  auto out_weight = param_view(out, norm.weight_offset, {norm.dim});
  auto out_bias = param_view(out, norm.bias_offset, {norm.dim});
  at::native_layer_norm_backward_out(gx, out_weight, out_bias, g, norm.input, {norm.dim},
                                     norm.mean, norm.rstd, norm.weight, norm.bias,
                                     {true, true, true});
}

void FisherOperator::check_parameters_unchanged() const {
  for (size_t i = 0; i < params_.size(); ++i) {
    TORCH_CHECK(params_[i]._version() == param_versions_[i], kOp, ": parameter ", i,
                " was modified in place after this operator was built; its cached activations "
                "belong to the old values. Build a new operator.");
  }
}

// The input LayerNorm h₀ = γ ⊙ x̂ + β (the observations have no tangent, so dh₀ = x̂ ⊙ dγ + dβ)
// is folded into the Linear after it, in both passes:
//   tangent:     dW h₀ + W dh₀ = (dW ⊙ γ + W ⊙ dγ) x̂ + (dW β + W dβ),
//   transposed:  with G = Σ_n g x̂ᵀ, the Linear's weight block is G ⊙ γ + (Σ_n g) βᵀ, and the
//                LayerNorm's blocks are Σ_k W ⊙ G (γ) and Wᵀ Σ_n g (β),
// so that each pass has one N-sized GEMM there instead of two, and no [N, obs] gradient.
const FisherOperator::Linear& FisherOperator::after_input_norm() const {
  return hidden_.empty() ? head_ : hidden_.front().linear;
}

at::Tensor FisherOperator::fold_input_norm_tangent(const at::Tensor& vc) {
  const Norm& norm = *input_norm_;
  const Linear& lin = after_input_norm();
  const auto d_weight = param_view(vc, lin.weight_offset, {lin.out_dim, lin.in_dim});
  at::mul_out(fold_weight_, d_weight, norm.weight);
  fold_weight_.addcmul_(lin.weight, param_view(vc, norm.weight_offset, {norm.dim}));
  at::mv_out(fold_bias_, d_weight, norm.bias);
  fold_bias_.addmv_(lin.weight, param_view(vc, norm.bias_offset, {norm.dim}))
      .add_(param_view(vc, lin.bias_offset, {lin.out_dim}));
  return fold_bias_;
}

void FisherOperator::fold_input_norm_transposed(at::Tensor& out) {
  const Norm& norm = *input_norm_;
  const Linear& lin = after_input_norm();
  auto out_weight = param_view(out, lin.weight_offset, {lin.out_dim, lin.in_dim});
  auto out_bias = param_view(out, lin.bias_offset, {lin.out_dim});
  at::mul_out(out_weight, fold_grad_, norm.weight);
  out_weight.addr_(out_bias, norm.bias);
  at::mul_out(fold_weight_, lin.weight, fold_grad_);  // as scratch: only a tangent pass reads it
  auto out_norm_weight = param_view(out, norm.weight_offset, {norm.dim});
  at::sum_out(out_norm_weight, fold_weight_, {0});
  auto out_norm_bias = param_view(out, norm.bias_offset, {norm.dim});
  at::mv_out(out_norm_bias, lin.weight.t(), out_bias);
}

// Transposed pass: Jᵀ u (reverse mode) for u at the head's output [N, A], written block by block
// into out: every network block except the head bias (Σ_n u, which the callers write first,
// fused with their computation of u) and the log-std block.
void FisherOperator::transposed_pass(const at::Tensor& u, at::Tensor& out) {
  if (hidden_.empty() && input_norm_) {
    at::mm_out(fold_grad_, u, input_norm_->xhat);
    fold_input_norm_transposed(out);
    return;
  }
  auto out_head_weight = param_view(out, head_.weight_offset, {head_.out_dim, head_.in_dim});
  at::mm_out(out_head_weight, u, head_input_);
  at::Tensor g;
  if (!hidden_.empty()) {
    g = flat_buffer_view(grad_a_, n_, head_.in_dim);
    at::mm_out(g, u.t(), head_.weight);
  }
  for (int64_t l = static_cast<int64_t>(hidden_.size()) - 1; l >= 0; --l) {
    auto& layer = hidden_[l];
    const auto& lin = layer.linear;
    const bool g_in_a = g.data_ptr() == grad_a_.data_ptr();
    at::Tensor gz = g;
    if (layer.norm) gz = flat_buffer_view(g_in_a ? grad_b_ : grad_a_, n_, lin.out_dim);
    auto out_weight = param_view(out, lin.weight_offset, {lin.out_dim, lin.in_dim});
    auto out_bias = param_view(out, lin.bias_offset, {lin.out_dim});
    if (layer.norm) norm_vjp(*layer.norm, g, out, gz);
    gz.mul_(layer.act_grad);
    at::sum_out(out_bias, gz, {0});
    if (l == 0 && input_norm_) {
      at::mm_out(fold_grad_, gz.t(), input_norm_->xhat);
      fold_input_norm_transposed(out);
    } else {
      at::mm_out(out_weight, gz.t(), layer.input);
    }
    if (l > 0) {
      const bool gz_in_a = gz.data_ptr() == grad_a_.data_ptr();
      g = flat_buffer_view(gz_in_a ? grad_b_ : grad_a_, n_, lin.in_dim);
      at::mm_out(g, gz, lin.weight);
    }
  }
}

// The product as a sequence of ATen operations over all samples (any device).
void FisherOperator::aten_product(const at::Tensor& vc, at::Tensor& out) {
  // Tangent pass: dh = J_h v layer by layer (forward mode).
  // dh: undefined while the features do not depend on θ (the raw observations; the input
  // LayerNorm is folded into the Linear after it).
  at::Tensor dh;
  for (auto& layer : hidden_) {
    const auto& lin = layer.linear;
    at::Tensor d_bias;
    if (input_norm_ && &layer == &hidden_.front()) {
      d_bias = fold_input_norm_tangent(vc);
      at::mm_out(layer.tangent, input_norm_->xhat, fold_weight_.t());
    } else {
      d_bias = param_view(vc, lin.bias_offset, {lin.out_dim});
      at::mm_out(layer.tangent, layer.input,
                 param_view(vc, lin.weight_offset, {lin.out_dim, lin.in_dim}).t());
      if (dh.defined()) layer.tangent.addmm_(dh, lin.weight.t());
    }
    layer.tangent.add_(d_bias).mul_(layer.act_grad);
    if (layer.norm) norm_jvp(*layer.norm, vc, layer.tangent, layer.tangent_norm);
    dh = layer.norm ? layer.tangent_norm : layer.tangent;
  }
  // The head in [A, N] layout, as the blocked CPU product has it.
  at::Tensor d_head_bias;
  if (hidden_.empty() && input_norm_) {
    d_head_bias = fold_input_norm_tangent(vc);
    at::mm_out(head_tangent_, fold_weight_, input_norm_->xhat.t());
  } else {
    d_head_bias = param_view(vc, head_.bias_offset, {head_.out_dim});
    at::mm_out(head_tangent_,
               param_view(vc, head_.weight_offset, {head_.out_dim, head_.in_dim}), head_input_.t());
    if (dh.defined()) head_tangent_.addmm_(head_.weight, dh.t());
  }

  // u = M J v, with the sample weights folded into M; the head bias's block of Jᵀu is Σ_n u.
  at::Tensor& u = head_tangent_;
  auto out_head_bias = param_view(out, head_.bias_offset, {head_.out_dim});
  u.add_(d_head_bias.unsqueeze(1));
  if (gaussian_) {
    u.mul_(scale_);
  } else {
    auto t = flat_buffer_view(tmp_, head_.out_dim, n_);
    at::mul_out(t, probs_, u);
    at::sum_out(row_a_, t, {0}, true);
    u.sub_(row_a_).mul_(probs_).mul_(scale_);  // (diag(p) − ppᵀ) u
  }
  at::sum_out(out_head_bias, u, {1});

  transposed_pass(u, out);
}

void FisherOperator::apply_out(const at::Tensor& v, at::Tensor& out) {
  check_parameters_unchanged();
  TORCH_CHECK(!linear_, kOp, ": a linear head (a value network) has no Fisher metric; such an ",
              "operator serves head_output and output_vjp only");
  TORCH_CHECK(v.dim() == 1 && v.size(0) == num_params_, kOp, ": 'vector' must have shape (",
              num_params_, ",), got ", v.sizes());
  TORCH_CHECK(v.scalar_type() == head_.weight.scalar_type() && v.device() == head_.weight.device(),
              kOp, ": 'vector' must have the policy's dtype and device");
  TORCH_CHECK(out.sizes() == v.sizes() && out.is_contiguous() &&
                  out.scalar_type() == v.scalar_type() && out.device() == v.device(),
              kOp, ": 'out' must be a contiguous tensor like 'vector'");
  at::NoGradGuard no_grad;
  const at::Tensor vc = v.contiguous();
  if (blocked_cpu_) {
    cpu_tangents(vc);
    blocked_.product(cpu_hidden_, cpu_head_, cpu_metric_, cpu_d_hidden_, cpu_d_head_, out,
                     input_norm_ ? &fold_grad_flat_ : nullptr);
    if (input_norm_) fold_input_norm_transposed(out);
  } else {
    aten_product(vc, out);
  }
  if (gaussian_) {
    // The log-std block: 2·I per sample, so 2·I for the weighted mean (0 with no active sample).
    auto out_log_std = param_view(out, log_std_offset_, {head_.out_dim});
    at::mul_out(out_log_std, param_view(vc, log_std_offset_, {head_.out_dim}),
                weight_sum_positive_);
    out_log_std.mul_(2);
  }
  if (damping_ != 0.0) out.add_(vc, damping_);
}

at::Tensor FisherOperator::output_vjp(const at::Tensor& grad_output) {
  check_parameters_unchanged();
  TORCH_CHECK(grad_output.sizes() == head_output_.sizes(), kOp, ": 'grad_output' must be ",
              head_output_.sizes(), " (the head's output), got ", grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == head_tangent_.scalar_type() &&
                  grad_output.device() == head_tangent_.device(),
              kOp, ": 'grad_output' must have the policy's dtype and device");
  at::NoGradGuard no_grad;
  head_tangent_.copy_(grad_output.t());
  if (blocked_cpu_) {
    // It writes every block; the log-std block, which no layer writes, as 0.
    at::Tensor out = at::empty({num_params_}, head_.weight.options());
    blocked_.transposed(cpu_hidden_, cpu_head_, head_tangent_, out,
                        input_norm_ ? &fold_grad_flat_ : nullptr);
    if (input_norm_) fold_input_norm_transposed(out);
    return out;
  }
  at::Tensor out = at::zeros({num_params_}, head_.weight.options());  // the log-std block stays 0
  auto out_head_bias = param_view(out, head_.bias_offset, {head_.out_dim});
  at::sum_out(out_head_bias, head_tangent_, {1});
  transposed_pass(head_tangent_, out);
  return out;
}

at::Tensor FisherOperator::apply(const at::Tensor& v) {
  at::Tensor out = at::empty({num_params_}, head_.weight.options());
  apply_out(v, out);
  return out;
}

at::Tensor FisherOperator::conjugate_gradient(const at::Tensor& b, int64_t iters,
                                              double residual_tol) {
  TORCH_CHECK(!linear_, kOp, ": a linear head (a value network) has no Fisher metric; such an ",
              "operator serves head_output and output_vjp only");
  TORCH_CHECK(b.dim() == 1 && b.size(0) == num_params_, kOp, ": 'b' must have shape (",
              num_params_, ",), got ", b.sizes());
  TORCH_CHECK(iters >= 0, kOp, ": 'iters' must be >= 0, got ", iters);
  at::NoGradGuard no_grad;
  cg_x_.zero_();
  cg_r_.copy_(b);
  cg_p_.copy_(b);
  at::Tensor r_dot_r = at::dot(cg_r_, cg_r_);
  for (int64_t k = 0; k < iters; ++k) {
    if (r_dot_r.item<double>() <= residual_tol) break;  // host sync: the stopping rule
    apply_out(cg_p_, cg_ap_);
    const auto alpha = r_dot_r / at::dot(cg_p_, cg_ap_);
    cg_x_.addcmul_(cg_p_, alpha);
    cg_r_.addcmul_(cg_ap_, alpha, -1);
    const auto new_r_dot_r = at::dot(cg_r_, cg_r_);
    cg_p_.mul_(new_r_dot_r / r_dot_r).add_(cg_r_);
    r_dot_r = new_r_dot_r;
  }
  // b − r = A x (the recurrence keeps r = b − A x): xᵀA x = xᵀb − xᵀr.
  cg_x_ax_ = at::dot(cg_x_, b) - at::dot(cg_x_, cg_r_);
  return cg_x_.clone();
}

at::Tensor FisherOperator::last_solution_quadratic_form() const {
  TORCH_CHECK(cg_x_ax_.defined(), kOp, ": no conjugate_gradient solution yet");
  return cg_x_ax_.clone();
}

}  // namespace haml
