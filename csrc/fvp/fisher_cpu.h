// The Fisher-vector product on the CPU, one block of samples at a time (fisher_operator.cpp).
//
// A product's tangent pass (J v) and transposed pass (Jᵀ u) are independent per sample, except
// for the parameter gradients, which sum over samples. So instead of running each stage over all
// N samples (every [N, d] intermediate leaving the cache between stages), each thread takes
// blocks of kBlockRows samples through the whole product: the tangent pass layer by layer, the
// head, then the transposed pass back down, with every intermediate in a per-thread workspace
// that stays in the L2 cache. Only the cached activations stream from memory, once per product.
// With the GEMMs at MKL's peak, the stages between them had been a fifth of a product; blocked,
// they are under a tenth (docs/BENCHMARKS.md).
//
// The gradient blocks a block contributes (Σ over its rows of gzᵀ h, of gz, of g ⊙ x̂, ...) are
// added into the partial gradient of its group: the blocks are split into at most kGroups
// contiguous groups, each summed in order into its own partial, and the partials are then added
// in group order. The result does not depend on the number of threads.
//
// The GEMMs call the BLAS that torch was built with directly (sgemm_/dgemm_, typically MKL),
// single-threaded inside the parallel region; where torch exports no BLAS they run through ATen.
//
// Every cached tensor is contiguous and [N, d] row-major unless said otherwise, of one dtype.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace haml::fvp_cpu {

constexpr int64_t kBlockRows = 256;
constexpr int64_t kGroups = 8;

// One Linear layer of the network as the product sees it: constant for an operator.
//   hidden:  z = h_{l-1} Wᵀ + b, a = φ(z), and h_l = LayerNorm(a) or a;
//   head:    out = h_L Wᵀ + b.
// The gradient offsets index the product's gradient space: [0, P) is the product's output (P
// parameters), [P, ...) extra blocks (the folded input LayerNorm's G, fisher_operator.cpp).
struct Layer {
  at::Tensor input;     // [N, in]: h_{l-1} (or x̂ of the input LayerNorm folded into this layer)
  at::Tensor weight;    // W [out, in]
  at::Tensor act_grad;  // φ'(z) [N, out]; undefined for the head
  // The LayerNorm after the activation, if any: a = x̂ / rstd + mean, h = γ ⊙ x̂ + β.
  at::Tensor xhat, rstd, gamma;  // [N, out], [N, 1], [out]
  int64_t grad_weight = -1, grad_bias = -1, grad_gamma = -1, grad_beta = -1;
};

// One layer's share of the product's vector v: the tangents of its parameters (views of v, or
// for the folded layer the folded tangent). d_gamma/d_beta only with a LayerNorm.
struct LayerTangent {
  at::Tensor d_weight, d_bias, d_gamma, d_beta;
};

// The head's Hessian of the KL at the old policy (M in F = JᵀMJ), per sample, with the sample
// weights w_n / Σw folded in; both in [A, N] layout.
struct HeadMetric {
  bool gaussian = true;
  at::Tensor scale;  // Gaussian: w_n / (Σw σ²) [A, N]; categorical: w_n / Σw [1, N]
  at::Tensor probs;  // categorical: π_old [A, N]
};

// The operator's forward pass at θ_old, the stages between its GEMMs, each one pass over rows
// (in place of 3–6 ATen passes and their temporaries).
// ReLU: z ← max(z, 0) (NaN stays NaN) and act_grad = 1 where z > 0, else 0 (autograd's ReLU).
void relu_forward(at::Tensor& z, at::Tensor& act_grad);
// tanh, given a = tanh(z): act_grad = 1 − a².
void tanh_grad(const at::Tensor& a, at::Tensor& act_grad);
// LayerNorm over the last dimension of x [N, d] (biased variance, as nn.LayerNorm):
// mean, rstd [N, 1]; xhat = (x − mean) · rstd; out = γ ⊙ xhat + β.
void layer_norm_forward(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                        double eps, at::Tensor& mean, at::Tensor& rstd, at::Tensor& xhat,
                        at::Tensor& out);

class BlockedProduct {
 public:
  BlockedProduct() = default;
  // Workspace for N samples, layers at most max_width wide, a head of num_out outputs and a
  // gradient space of grad_size elements; allocated here once (and again only if the number of
  // threads grows).
  BlockedProduct(int64_t n, int64_t max_width, int64_t num_out, int64_t grad_size,
                 const at::TensorOptions& options);

  // Jᵀ M J v for the network `hidden` + `head`: the gradient space goes to out (its first
  // out.numel() elements) and extra (the rest, if any). Blocks no layer writes are 0.
  void product(const std::vector<Layer>& hidden, const Layer& head, const HeadMetric& metric,
               const std::vector<LayerTangent>& d_hidden, const LayerTangent& d_head,
               at::Tensor& out, at::Tensor* extra);

  // Jᵀ u for u [A, N] at the head's output (the transposed pass alone), into out and extra.
  void transposed(const std::vector<Layer>& hidden, const Layer& head, const at::Tensor& u,
                  at::Tensor& out, at::Tensor* extra);

  // Whether the GEMMs go to torch's BLAS directly (false: through ATen).
  static bool direct_blas();
  // Tests only: run the GEMMs through ATen even where the BLAS is exported.
  static void force_aten_gemm(bool force);

 private:
  template <typename T>
  void run(const std::vector<Layer>& hidden, const Layer& head, const HeadMetric* metric,
           const std::vector<LayerTangent>* d_hidden, const LayerTangent* d_head,
           const at::Tensor* u, at::Tensor& out, at::Tensor* extra);
  void ensure_thread_workspace();

  int64_t n_ = 0, max_width_ = 0, num_out_ = 0, grad_size_ = 0;
  at::Tensor partials_;   // [kGroups, grad_size]
  at::Tensor workspace_;  // [threads, per-thread workspace]
  int64_t per_thread_ = 0;
};

}  // namespace haml::fvp_cpu
