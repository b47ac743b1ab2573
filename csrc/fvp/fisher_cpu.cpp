// See fisher_cpu.h. Each stage is a loop over the rows of a block that the compiler vectorises
// (compiled for each instruction-set level of haml/cpu_isa.h, picked at run time). Sums along a row
// are `omp simd` reductions: the compiler may reorder them into vector lanes (in an order fixed for
// a given ISA, so still deterministic) without -ffast-math. Explicit lanes (16 partial sums)
// compiled to shuffles, scalar adds and spills here.
#include "fisher_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>

#include "haml/cpu_isa.h"
#include "layer_norm/layer_norm_kernel.h"

#if defined(__GNUC__) && defined(__linux__)
// The Fortran BLAS that torch links (MKL, OpenBLAS) and exports. Weak: where torch exports none
// they are null and the GEMMs go through ATen. (Elsewhere, e.g. macOS, where an undefined weak
// symbol needs linker flags, the GEMMs always go through ATen.)
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc) __attribute__((weak));
}
#define HAML_HAS_WEAK_BLAS 1
#endif

namespace haml::fvp_cpu {

namespace {

// The row-wise forward stages: about this many elements per task.
constexpr int64_t kRowGrainElements = 16384;
// Each workspace buffer starts on a multiple of this many elements (64 bytes or more).
constexpr int64_t kAlign = 16;

std::atomic<bool> force_aten{false};

int64_t aligned(int64_t elements) { return (elements + kAlign - 1) / kAlign * kAlign; }

// Row-major C[m, n] = op(A) op(B) + beta C with op(X) = X or Xᵀ; beta is 0 or 1.
template <typename T>
void gemm_rows(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a,
               int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
#ifdef HAML_HAS_WEAK_BLAS
  auto* blas = [] {
    if constexpr (std::is_same_v<T, float>) return sgemm_;
    else return dgemm_;
  }();
  if (blas != nullptr && !force_aten.load(std::memory_order_relaxed)) {
    // A row-major X is the column-major Xᵀ, so BLAS computes Cᵀ = op(B)ᵀ op(A)ᵀ.
    const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
    const int im = static_cast<int>(n), in = static_cast<int>(m), ik = static_cast<int>(k);
    const int ilda = static_cast<int>(ldb), ildb = static_cast<int>(lda),
              ildc = static_cast<int>(ldc);
    const T one = T(1);
    blas(&ta, &tb, &im, &in, &ik, &one, b, &ilda, a, &ildb, &beta, c, &ildc);
    return;
  }
#endif
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  auto view = [&](const T* p, int64_t rows, int64_t cols, int64_t ld, bool trans) {
    // op(X) [rows, cols]: X itself, or the transpose of a stored [cols, rows].
    return trans ? at::from_blob(const_cast<T*>(p), {rows, cols}, {1, ld}, options)
                 : at::from_blob(const_cast<T*>(p), {rows, cols}, {ld, 1}, options);
  };
  at::Tensor out = at::from_blob(c, {m, n}, {ldc, 1}, options);
  if (beta == T(0)) {
    at::mm_out(out, view(a, m, k, lda, trans_a), view(b, k, n, ldb, trans_b));
  } else {
    out.addmm_(view(a, m, k, lda, trans_a), view(b, k, n, ldb, trans_b));
  }
}

// Σ_j a_j and Σ_j a_j b_j over one row.
template <typename T>
__attribute__((always_inline)) inline void sum_and_dot(const T* __restrict a,
                                                       const T* __restrict b, int64_t d,
                                                       T& sum_a, T& sum_ab) {
  T s_a = T(0), s_ab = T(0);
#pragma omp simd reduction(+ : s_a, s_ab)
  for (int64_t j = 0; j < d; ++j) {
    s_a += a[j];
    s_ab += a[j] * b[j];
  }
  sum_a = s_a;
  sum_ab = s_ab;
}

template <typename T>
HAML_KERNEL_BODY void rows_bias_act(T* t, const T* __restrict db, const T* __restrict ag,
                                    int64_t rows, int64_t d) {
  for (int64_t i = 0; i < rows; ++i) {
    T* __restrict ti = t + i * d;
    const T* __restrict ai = ag + i * d;
    for (int64_t j = 0; j < d; ++j) ti[j] = (ti[j] + db[j]) * ai[j];
  }
}

template <typename T>
HAML_KERNEL_BODY void rows_tangent_norm(T* t, const T* __restrict db, const T* __restrict ag,
                                        const T* __restrict xhat, const T* __restrict rstd,
                                        const T* __restrict gamma, const T* __restrict d_gamma,
                                        const T* __restrict d_beta, T* y, int64_t rows, int64_t d) {
  const T inv_d = T(1) / static_cast<T>(d);
  for (int64_t i = 0; i < rows; ++i) {
    T* __restrict ti = t + i * d;
    const T* __restrict ai = ag + i * d;
    const T* __restrict xi = xhat + i * d;
    T* __restrict yi = y + i * d;
    for (int64_t j = 0; j < d; ++j) ti[j] = (ti[j] + db[j]) * ai[j];
    T s_t, s_tx;
    sum_and_dot(ti, xi, d, s_t, s_tx);
    const T m_t = s_t * inv_d, m_tx = s_tx * inv_d, r = rstd[i];
    for (int64_t j = 0; j < d; ++j) {
      yi[j] = gamma[j] * r * (ti[j] - m_t - xi[j] * m_tx) + xi[j] * d_gamma[j] + d_beta[j];
    }
  }
}

// gz may be g: each element is read before it is written.
template <typename T>
HAML_KERNEL_BODY void rows_transposed_act(const T* g, const T* __restrict ag, T* gz,
                                          T* __restrict acc_bias, int64_t rows, int64_t d) {
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < d; ++j) {
      const T v = g[i * d + j] * ag[i * d + j];
      gz[i * d + j] = v;
      acc_bias[j] += v;
    }
  }
}

template <typename T>
HAML_KERNEL_BODY void rows_transposed_norm_act(const T* __restrict g, const T* __restrict xhat,
                                               const T* __restrict rstd, const T* __restrict gamma,
                                               const T* __restrict ag, T* __restrict gz,
                                               T* __restrict acc_gamma, T* __restrict acc_beta,
                                               T* __restrict acc_bias, int64_t rows, int64_t d) {
  const T inv_d = T(1) / static_cast<T>(d);
  for (int64_t i = 0; i < rows; ++i) {
    const T* __restrict gi = g + i * d;
    const T* __restrict xi = xhat + i * d;
    const T* __restrict ai = ag + i * d;
    T* __restrict zi = gz + i * d;
    // γ ⊙ g into the output row first, so that its sums run over one contiguous row.
    for (int64_t j = 0; j < d; ++j) {
      zi[j] = gamma[j] * gi[j];
      acc_gamma[j] += gi[j] * xi[j];
      acc_beta[j] += gi[j];
    }
    T s_g, s_gx;
    sum_and_dot(zi, xi, d, s_g, s_gx);
    const T m_g = s_g * inv_d, m_gx = s_gx * inv_d, r = rstd[i];
    for (int64_t j = 0; j < d; ++j) {
      const T v = ai[j] * r * (zi[j] - m_g - xi[j] * m_gx);
      zi[j] = v;
      acc_bias[j] += v;
    }
  }
}

template <typename T>
HAML_KERNEL_BODY void rows_relu(T* __restrict z, T* __restrict act_grad, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    const T v = z[i];
    z[i] = v < T(0) ? T(0) : v;
    act_grad[i] = v > T(0) ? T(1) : T(0);
  }
}

template <typename T>
HAML_KERNEL_BODY void rows_tanh_grad(const T* __restrict a, T* __restrict act_grad, int64_t count) {
  for (int64_t i = 0; i < count; ++i) act_grad[i] = T(1) - a[i] * a[i];
}

// The Gaussian head on a block, [A, nb] with row stride ld_u: u ← (u + db) ⊙ scale (scale: the
// block's columns of [A, N], row stride ld_s); acc[a] += Σ_i of the new u[a][i].
template <typename T>
HAML_KERNEL_BODY void head_gaussian_block(T* __restrict u, int64_t ld_u, const T* __restrict db,
                                          const T* __restrict scale, int64_t ld_s,
                                          T* __restrict acc, int64_t a_dim, int64_t nb) {
  for (int64_t a = 0; a < a_dim; ++a) {
    T* __restrict ua = u + a * ld_u;
    const T* __restrict sa = scale + a * ld_s;
    const T b = db[a];
    T sum = T(0);
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < nb; ++i) {
      const T v = (ua[i] + b) * sa[i];
      ua[i] = v;
      sum += v;
    }
    acc[a] += sum;
  }
}

// The categorical head on a block: t = u + db, u ← w_i (diag(p) − ppᵀ) t per sample (probs: the
// block's columns of [A, N], row stride ld_p; weights: the block's [nb]); acc[a] += Σ_i u[a][i].
// p_dot_t is an [nb] workspace.
template <typename T>
HAML_KERNEL_BODY void head_categorical_block(T* __restrict u, int64_t ld_u, const T* __restrict db,
                                             const T* __restrict probs, int64_t ld_p,
                                             const T* __restrict weights, T* __restrict p_dot_t,
                                             T* __restrict acc, int64_t a_dim, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) p_dot_t[i] = T(0);
  for (int64_t a = 0; a < a_dim; ++a) {
    T* __restrict ua = u + a * ld_u;
    const T* __restrict pa = probs + a * ld_p;
    const T b = db[a];
    for (int64_t i = 0; i < nb; ++i) {
      ua[i] += b;
      p_dot_t[i] += pa[i] * ua[i];
    }
  }
  for (int64_t a = 0; a < a_dim; ++a) {
    T* __restrict ua = u + a * ld_u;
    const T* __restrict pa = probs + a * ld_p;
    T sum = T(0);
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < nb; ++i) {
      const T v = weights[i] * pa[i] * (ua[i] - p_dot_t[i]);
      ua[i] = v;
      sum += v;
    }
    acc[a] += sum;
  }
}

// acc[a] += Σ_i u[a][i] over a block of [A, nb] with row stride ld_u.
template <typename T>
HAML_KERNEL_BODY void add_row_sums(const T* __restrict u, int64_t ld_u, T* __restrict acc,
                                   int64_t a_dim, int64_t nb) {
  for (int64_t a = 0; a < a_dim; ++a) {
    const T* __restrict ua = u + a * ld_u;
    T sum = T(0);
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < nb; ++i) sum += ua[i];
    acc[a] += sum;
  }
}

// dst[j] = Σ_g partials[g][j] for j in [begin, end), adding the groups in order.
template <typename T>
HAML_KERNEL_BODY void sum_groups(const T* __restrict partials, int64_t stride, int64_t groups,
                                 T* __restrict dst, int64_t begin, int64_t end) {
  for (int64_t j = begin; j < end; ++j) dst[j - begin] = partials[j];
  for (int64_t g = 1; g < groups; ++g) {
    const T* __restrict p = partials + g * stride;
    for (int64_t j = begin; j < end; ++j) dst[j - begin] += p[j];
  }
}

template <typename T>
const T* ptr(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

void check_rows(const char* what, const at::Tensor& t, int64_t n, int64_t d) {
  TORCH_CHECK(t.is_contiguous() && t.numel() == n * d, "FisherOperator: ", what,
              " must be contiguous with ", n, "x", d, " elements, got ", t.sizes());
}

void check_layer(const Layer& layer, int64_t n, bool hidden) {
  const int64_t out = layer.weight.size(0), in = layer.weight.size(1);
  TORCH_CHECK(layer.weight.is_contiguous(), "FisherOperator: a weight must be contiguous");
  check_rows("a layer's input", layer.input, n, in);
  if (hidden) check_rows("act_grad", layer.act_grad, n, out);
  if (layer.xhat.defined()) {
    check_rows("xhat", layer.xhat, n, out);
    check_rows("rstd", layer.rstd, n, 1);
  }
}

}  // namespace

void relu_forward(at::Tensor& z, at::Tensor& act_grad) {
  TORCH_CHECK(z.is_contiguous() && act_grad.is_contiguous() && z.sizes() == act_grad.sizes(),
              "FisherOperator: relu_forward needs contiguous z and act_grad of one shape");
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "fvp_relu_forward", [&] {
    scalar_t* p_z = z.data_ptr<scalar_t>();
    scalar_t* p_ag = act_grad.data_ptr<scalar_t>();
    at::parallel_for(0, z.numel(), kRowGrainElements, [&](int64_t b, int64_t e) {
      cpu::dispatch(HAML_KERNEL(rows_relu<scalar_t>), p_z + b, p_ag + b, e - b);
    });
  });
}

void tanh_grad(const at::Tensor& a, at::Tensor& act_grad) {
  TORCH_CHECK(a.is_contiguous() && act_grad.is_contiguous() && a.sizes() == act_grad.sizes(),
              "FisherOperator: tanh_grad needs contiguous a and act_grad of one shape");
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "fvp_tanh_grad", [&] {
    const scalar_t* p_a = a.const_data_ptr<scalar_t>();
    scalar_t* p_ag = act_grad.data_ptr<scalar_t>();
    at::parallel_for(0, a.numel(), kRowGrainElements, [&](int64_t b, int64_t e) {
      cpu::dispatch(HAML_KERNEL(rows_tanh_grad<scalar_t>), p_a + b, p_ag + b, e - b);
    });
  });
}

void layer_norm_forward(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                        double eps, at::Tensor& mean, at::Tensor& rstd, at::Tensor& xhat,
                        at::Tensor& out) {
  const int64_t n = x.size(0), d = x.size(1);
  check_rows("x", x, n, d);
  check_rows("mean", mean, n, 1);
  check_rows("rstd", rstd, n, 1);
  check_rows("xhat", xhat, n, d);
  check_rows("out", out, n, d);
  TORCH_CHECK(gamma.is_contiguous() && beta.is_contiguous() && gamma.numel() == d &&
                  beta.numel() == d,
              "FisherOperator: LayerNorm weight and bias must be contiguous [", d, "]");
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fvp_layer_norm_forward", [&] {
    const scalar_t* p_x = x.const_data_ptr<scalar_t>();
    scalar_t* p_mean = mean.data_ptr<scalar_t>();
    scalar_t* p_rstd = rstd.data_ptr<scalar_t>();
    scalar_t* p_xhat = xhat.data_ptr<scalar_t>();
    scalar_t* p_out = out.data_ptr<scalar_t>();
    at::parallel_for(0, n, std::max<int64_t>(1, kRowGrainElements / d), [&](int64_t b, int64_t e) {
      detail::layer_norm_row_range<scalar_t, /*KeepXhat=*/true>(
          p_x, gamma.const_data_ptr<scalar_t>(), beta.const_data_ptr<scalar_t>(),
          static_cast<scalar_t>(eps), p_mean, p_rstd, p_xhat, p_out, b, e, d);
    });
  });
}

BlockedProduct::BlockedProduct(int64_t n, int64_t max_width, int64_t num_out, int64_t grad_size,
                               const at::TensorOptions& options)
    : n_(n), max_width_(max_width), num_out_(num_out), grad_size_(grad_size) {
  TORCH_CHECK(n * std::max(max_width, num_out) <= std::numeric_limits<int>::max(),
              "FisherOperator: too many samples for the CPU product's BLAS calls");
  partials_ = at::empty({kGroups, grad_size}, options);
  // Two [B, width] buffers (the tangent's, then the transposed pass's ping-pong), the head's
  // [A, B] block and an [B] column.
  per_thread_ = 2 * aligned(kBlockRows * max_width) + aligned(num_out * kBlockRows) +
                aligned(kBlockRows);
  workspace_ = at::empty({at::get_num_threads(), per_thread_}, options);
}

void BlockedProduct::ensure_thread_workspace() {
  const int64_t threads = at::get_num_threads();
  if (workspace_.size(0) < threads) {
    workspace_ = at::empty({threads, per_thread_}, workspace_.options());
  }
}

bool BlockedProduct::direct_blas() {
#ifdef HAML_HAS_WEAK_BLAS
  return sgemm_ != nullptr && dgemm_ != nullptr && !force_aten.load();
#else
  return false;
#endif
}

void BlockedProduct::force_aten_gemm(bool force) { force_aten.store(force); }

void BlockedProduct::product(const std::vector<Layer>& hidden, const Layer& head,
                             const HeadMetric& metric, const std::vector<LayerTangent>& d_hidden,
                             const LayerTangent& d_head, at::Tensor& out, at::Tensor* extra) {
  TORCH_CHECK(d_hidden.size() == hidden.size(), "FisherOperator: one tangent per hidden layer");
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "fvp_blocked_product", [&] {
    run<scalar_t>(hidden, head, &metric, &d_hidden, &d_head, nullptr, out, extra);
  });
}

void BlockedProduct::transposed(const std::vector<Layer>& hidden, const Layer& head,
                                const at::Tensor& u, at::Tensor& out, at::Tensor* extra) {
  check_rows("u", u, num_out_, n_);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "fvp_blocked_transposed", [&] {
    run<scalar_t>(hidden, head, nullptr, nullptr, nullptr, &u, out, extra);
  });
}

template <typename T>
void BlockedProduct::run(const std::vector<Layer>& hidden, const Layer& head,
                         const HeadMetric* metric, const std::vector<LayerTangent>* d_hidden,
                         const LayerTangent* d_head, const at::Tensor* u_given, at::Tensor& out,
                         at::Tensor* extra) {
  const int64_t n = n_, num_out = num_out_, stride = grad_size_;
  const int64_t out_size = out.numel(), extra_size = extra ? extra->numel() : 0;
  TORCH_CHECK(out.is_contiguous() && (!extra || extra->is_contiguous()) &&
                  out_size + extra_size == stride,
              "FisherOperator: the gradient space has ", stride, " elements, got ", out_size,
              " + ", extra_size);
  TORCH_CHECK(head.weight.size(0) == num_out, "FisherOperator: the head has ", num_out,
              " outputs");
  for (const auto& layer : hidden) check_layer(layer, n, true);
  check_layer(head, n, false);
  ensure_thread_workspace();

  const bool tangent = u_given == nullptr;
  const int64_t blocks = (n + kBlockRows - 1) / kBlockRows;
  const int64_t groups = std::min(kGroups, blocks);
  const int64_t buffer = aligned(kBlockRows * max_width_);
  T* partials = partials_.data_ptr<T>();
  T* workspace = workspace_.data_ptr<T>();
  const int64_t head_in = head.weight.size(1);

  // One block of rows [r0, r0 + nb): its whole product, its gradient blocks added into grad.
  auto block = [&](int64_t r0, int64_t nb, T* grad, T* ws) {
    T* bufs[2] = {ws, ws + buffer};
    T* u_block = ws + 2 * buffer;
    T* column = u_block + aligned(num_out * kBlockRows);
    const T* u = u_block;  // M J v, or the given u
    int64_t ld_u = nb;
    const T* dh = nullptr;  // the tangent of the current layer's input; null for raw features
    int dh_index = -1;
    if (tangent) {
      for (size_t l = 0; l < hidden.size(); ++l) {
        const Layer& layer = hidden[l];
        const LayerTangent& d = (*d_hidden)[l];
        const int64_t out_dim = layer.weight.size(0), in_dim = layer.weight.size(1);
        const int t_index = dh_index == 0 ? 1 : 0;
        T* t = bufs[t_index];
        // t = h dWᵀ + dh Wᵀ, then the bias, φ' and the LayerNorm's Jacobian
        gemm_rows<T>(false, true, nb, out_dim, in_dim, ptr<T>(layer.input) + r0 * in_dim, in_dim,
                     ptr<T>(d.d_weight), in_dim, T(0), t, out_dim);
        if (dh) {
          gemm_rows<T>(false, true, nb, out_dim, in_dim, dh, in_dim, ptr<T>(layer.weight), in_dim,
                       T(1), t, out_dim);
        }
        const T* ag = ptr<T>(layer.act_grad) + r0 * out_dim;
        if (layer.xhat.defined()) {
          T* y = bufs[1 - t_index];
          cpu::dispatch(HAML_KERNEL(rows_tangent_norm<T>), t, ptr<T>(d.d_bias), ag,
                        ptr<T>(layer.xhat) + r0 * out_dim, ptr<T>(layer.rstd) + r0,
                        ptr<T>(layer.gamma), ptr<T>(d.d_gamma), ptr<T>(d.d_beta), y, nb, out_dim);
          dh = y;
          dh_index = 1 - t_index;
        } else {
          cpu::dispatch(HAML_KERNEL(rows_bias_act<T>), t, ptr<T>(d.d_bias), ag, nb, out_dim);
          dh = t;
          dh_index = t_index;
        }
      }
      // The head in [A, nb] layout: u = dW hᵀ + W dhᵀ, then u ← M (u + db).
      gemm_rows<T>(false, true, num_out, nb, head_in, ptr<T>(d_head->d_weight), head_in,
                   ptr<T>(head.input) + r0 * head_in, head_in, T(0), u_block, nb);
      if (dh) {
        gemm_rows<T>(false, true, num_out, nb, head_in, ptr<T>(head.weight), head_in, dh, head_in,
                     T(1), u_block, nb);
      }
      T* acc_bias = grad + head.grad_bias;
      if (metric->gaussian) {
        cpu::dispatch(HAML_KERNEL(head_gaussian_block<T>), u_block, nb, ptr<T>(d_head->d_bias),
                      ptr<T>(metric->scale) + r0, n, acc_bias, num_out, nb);
      } else {
        cpu::dispatch(HAML_KERNEL(head_categorical_block<T>), u_block, nb, ptr<T>(d_head->d_bias),
                      ptr<T>(metric->probs) + r0, n, ptr<T>(metric->scale) + r0, column, acc_bias,
                      num_out, nb);
      }
    } else {
      u = ptr<T>(*u_given) + r0;
      ld_u = n;
      cpu::dispatch(HAML_KERNEL(add_row_sums<T>), u, ld_u, grad + head.grad_bias, num_out, nb);
    }

    // Transposed pass: Σ u hᵀ for the head's weight, then g = uᵀ W down through the layers.
    gemm_rows<T>(false, false, num_out, head_in, nb, u, ld_u, ptr<T>(head.input) + r0 * head_in,
                 head_in, T(1), grad + head.grad_weight, head_in);
    if (hidden.empty()) return;
    int g_index = 0;
    gemm_rows<T>(true, false, nb, head_in, num_out, u, ld_u, ptr<T>(head.weight), head_in, T(0),
                 bufs[g_index], head_in);
    for (int64_t l = static_cast<int64_t>(hidden.size()) - 1; l >= 0; --l) {
      const Layer& layer = hidden[l];
      const int64_t out_dim = layer.weight.size(0), in_dim = layer.weight.size(1);
      const T* ag = ptr<T>(layer.act_grad) + r0 * out_dim;
      T* g = bufs[g_index];
      T* gz = g;
      if (layer.xhat.defined()) {
        gz = bufs[1 - g_index];
        cpu::dispatch(HAML_KERNEL(rows_transposed_norm_act<T>), g,
                      ptr<T>(layer.xhat) + r0 * out_dim, ptr<T>(layer.rstd) + r0,
                      ptr<T>(layer.gamma), ag, gz, grad + layer.grad_gamma, grad + layer.grad_beta,
                      grad + layer.grad_bias, nb, out_dim);
        g_index = 1 - g_index;
      } else {
        cpu::dispatch(HAML_KERNEL(rows_transposed_act<T>), g, ag, gz, grad + layer.grad_bias, nb,
                      out_dim);
      }
      gemm_rows<T>(true, false, out_dim, in_dim, nb, gz, out_dim,
                   ptr<T>(layer.input) + r0 * in_dim, in_dim, T(1), grad + layer.grad_weight,
                   in_dim);
      if (l > 0) {
        g_index = 1 - g_index;
        gemm_rows<T>(false, false, nb, in_dim, out_dim, gz, out_dim, ptr<T>(layer.weight), in_dim,
                     T(0), bufs[g_index], in_dim);
      }
    }
  };

  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    T* ws = workspace + at::get_thread_num() * per_thread_;
    for (int64_t g = g0; g < g1; ++g) {
      T* grad = partials + g * stride;
      std::fill(grad, grad + stride, T(0));
      for (int64_t b = blocks * g / groups; b < blocks * (g + 1) / groups; ++b) {
        const int64_t r0 = b * kBlockRows;
        block(r0, std::min(kBlockRows, n - r0), grad, ws);
      }
    }
  });

  T* dst_out = out.data_ptr<T>();
  T* dst_extra = extra ? extra->data_ptr<T>() : nullptr;
  at::parallel_for(0, stride, 2048, [&](int64_t j0, int64_t j1) {
    const int64_t split = std::clamp(out_size, j0, j1);
    if (split > j0)
      cpu::dispatch(HAML_KERNEL(sum_groups<T>), partials, stride, groups, dst_out + j0, j0, split);
    if (j1 > split)
      cpu::dispatch(HAML_KERNEL(sum_groups<T>), partials, stride, groups,
                    dst_extra + (split - out_size), split, j1);
  });
}

}  // namespace haml::fvp_cpu
