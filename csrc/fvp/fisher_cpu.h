// Fused CPU loops for the elementwise stages of the Fisher-vector product (fisher_operator.cpp).
//
// Between its GEMMs, one product runs, per layer, a bias add, the activation's derivative and,
// with LayerNorm, the LayerNorm Jacobian and its transpose; the transposed pass also sums the
// bias, γ and β gradients over the samples. As separate ATen calls these are 5–8 passes over
// [N, d] per layer (ATen's LayerNorm backward alone writes temporaries and copies them out); here
// each stage is one pass over its rows, parallel over fixed chunks of rows.
//
// Every tensor is contiguous, [N, d] row-major unless said otherwise, of one floating dtype.
// Column sums go to `out_*` (contiguous [d], typically a view into the product's output) and are
// summed chunk by chunk in a fixed order, so results do not depend on the number of threads.
// `partial` is a workspace of at least partial_size(N, d) elements.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace haml::fvp_cpu {

// Elements of the `partial` workspace the column-summing stages need for N rows of width d.
int64_t partial_size(int64_t n, int64_t d);

// Tangent pass, a hidden layer without LayerNorm: t ← (t + db) ⊙ φ'(z).
void tangent_bias_act(at::Tensor& t, const at::Tensor& db, const at::Tensor& act_grad);

// Tangent pass, a hidden layer with LayerNorm: t ← (t + db) ⊙ φ'(z), then
//   y = γ ⊙ rstd ⊙ (t − mean(t) − x̂ ⊙ mean(t ⊙ x̂)) + x̂ ⊙ dγ + dβ
// (the Jacobian of LayerNorm applied to t, plus its parameters' tangents). rstd is [N].
void tangent_norm(at::Tensor& t, const at::Tensor& db, const at::Tensor& act_grad,
                  const at::Tensor& xhat, const at::Tensor& rstd, const at::Tensor& gamma,
                  const at::Tensor& d_gamma, const at::Tensor& d_beta, at::Tensor& y);

// Transposed pass, a hidden layer without LayerNorm: gz = g ⊙ φ'(z) (gz may be g),
// out_bias = Σ_n gz.
void transposed_act(const at::Tensor& g, const at::Tensor& act_grad, at::Tensor& gz,
                    at::Tensor& out_bias, at::Tensor& partial);

// Transposed pass, a hidden layer with LayerNorm (g: the gradient at the LayerNorm's output):
//   gz = φ'(z) ⊙ rstd ⊙ (γg − mean(γg) − x̂ ⊙ mean(γg ⊙ x̂)),
//   out_gamma = Σ_n g ⊙ x̂,  out_beta = Σ_n g,  out_bias = Σ_n gz.
void transposed_norm_act(const at::Tensor& g, const at::Tensor& xhat, const at::Tensor& rstd,
                         const at::Tensor& gamma, const at::Tensor& act_grad, at::Tensor& gz,
                         at::Tensor& out_gamma, at::Tensor& out_beta, at::Tensor& out_bias,
                         at::Tensor& partial);

// The head, in [A, N] layout (one row per output, the layout of its GEMMs): Gaussian,
// u ← (u + db) ⊙ scale (scale [A, N] = w_n / (Σw σ²)), out_bias = Σ_n u.
void head_gaussian(at::Tensor& u, const at::Tensor& db, const at::Tensor& scale,
                   at::Tensor& out_bias, at::Tensor& partial);

// The head, [A, N] layout, categorical: t = u + db, u ← w_n (diag(p) − ppᵀ) t per sample
// (probs [A, N], weights [N]), out_bias = Σ_n u; `column` is an [N] workspace.
void head_categorical(at::Tensor& u, const at::Tensor& db, const at::Tensor& probs,
                      const at::Tensor& weights, at::Tensor& out_bias, at::Tensor& partial,
                      at::Tensor& column);

}  // namespace haml::fvp_cpu
