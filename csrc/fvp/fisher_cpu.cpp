// See fisher_cpu.h. Each stage is a loop over rows that GCC vectorises (compiled for AVX2 and the
// baseline ISA, picked at run time); the row sums use kLanes independent partial sums so that
// they vectorise without -ffast-math.
#include "fisher_cpu.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>

#include "haml/vectorize.h"

namespace haml::fvp_cpu {

namespace {

constexpr int kLanes = 16;
// Column sums are accumulated per chunk of rows, then over the chunks in order: at most
// kMaxChunks chunks (bounding the workspace), at least kMinChunkRows rows each.
constexpr int64_t kMaxChunks = 256;
constexpr int64_t kMinChunkRows = 32;
// Rows of the stages without column sums: about this many elements per task.
constexpr int64_t kRowGrainElements = 16384;

int64_t rows_per_chunk(int64_t n) {
  return std::max(kMinChunkRows, (n + kMaxChunks - 1) / kMaxChunks);
}

int64_t row_grain(int64_t d) { return std::max<int64_t>(1, kRowGrainElements / std::max<int64_t>(d, 1)); }

// Σ_j a_j and Σ_j a_j b_j over one row.
template <typename T>
__attribute__((always_inline)) inline void sum_and_dot(const T* __restrict a,
                                                       const T* __restrict b, int64_t d,
                                                       T& sum_a, T& sum_ab) {
  T lanes_a[kLanes] = {};
  T lanes_ab[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= d; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      lanes_a[l] += a[j + l];
      lanes_ab[l] += a[j + l] * b[j + l];
    }
  }
  T s_a = T(0), s_ab = T(0);
  for (; j < d; ++j) {
    s_a += a[j];
    s_ab += a[j] * b[j];
  }
  for (int l = 0; l < kLanes; ++l) {
    s_a += lanes_a[l];
    s_ab += lanes_ab[l];
  }
  sum_a = s_a;
  sum_ab = s_ab;
}

// Runs chunk(begin, end, acc) over fixed chunks of rows in parallel, acc being the chunk's
// zeroed [k, d] accumulators, then writes the k column sums, added chunk by chunk in order, to
// outs[0..k).
template <typename T, int K, typename Chunk>
void with_column_sums(int64_t n, int64_t d, at::Tensor& partial, at::Tensor* const (&outs)[K],
                      const Chunk& chunk) {
  const int64_t rows = rows_per_chunk(n);
  const int64_t chunks = (n + rows - 1) / rows;
  TORCH_CHECK(partial.numel() >= chunks * K * d, "FisherOperator: column-sum workspace too small");
  T* acc_all = partial.data_ptr<T>();
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      T* acc = acc_all + c * K * d;
      std::fill(acc, acc + K * d, T(0));
      chunk(c * rows, std::min(n, (c + 1) * rows), acc);
    }
  });
  for (int s = 0; s < K; ++s) {
    TORCH_CHECK(outs[s]->is_contiguous() && outs[s]->numel() == d,
                "FisherOperator: a column-sum output must be contiguous [", d, "]");
    T* out = outs[s]->template data_ptr<T>();
    std::fill(out, out + d, T(0));
    for (int64_t c = 0; c < chunks; ++c) {
      const T* acc = acc_all + c * K * d + s * d;
      for (int64_t j = 0; j < d; ++j) out[j] += acc[j];
    }
  }
}

template <typename T>
HAML_VECTOR_CLONES void rows_bias_act(T* t, const T* __restrict db, const T* __restrict ag,
                                      int64_t rows, int64_t d) {
  for (int64_t i = 0; i < rows; ++i) {
    T* __restrict ti = t + i * d;
    const T* __restrict ai = ag + i * d;
    for (int64_t j = 0; j < d; ++j) ti[j] = (ti[j] + db[j]) * ai[j];
  }
}

template <typename T>
HAML_VECTOR_CLONES void rows_tangent_norm(T* t, const T* __restrict db, const T* __restrict ag,
                                          const T* __restrict xhat, const T* __restrict rstd,
                                          const T* __restrict gamma, const T* __restrict d_gamma,
                                          const T* __restrict d_beta, T* y, int64_t rows,
                                          int64_t d) {
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
HAML_VECTOR_CLONES void rows_transposed_act(const T* g, const T* __restrict ag, T* gz,
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
HAML_VECTOR_CLONES void rows_transposed_norm_act(
    const T* __restrict g, const T* __restrict xhat, const T* __restrict rstd,
    const T* __restrict gamma, const T* __restrict ag, T* __restrict gz, T* __restrict acc_gamma,
    T* __restrict acc_beta, T* __restrict acc_bias, int64_t rows, int64_t d) {
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

// Columns [begin, end) of the head in [A, N] layout; acc[a] = Σ_n of the new u[a][n].
template <typename T>
HAML_VECTOR_CLONES void columns_head_gaussian(T* __restrict u, const T* __restrict db,
                                              const T* __restrict scale, T* __restrict acc,
                                              int64_t a_dim, int64_t n, int64_t begin,
                                              int64_t end) {
  for (int64_t a = 0; a < a_dim; ++a) {
    T* __restrict ua = u + a * n;
    const T* __restrict sa = scale + a * n;
    const T b = db[a];
    T lanes[kLanes] = {};
    int64_t i = begin;
    for (; i + kLanes <= end; i += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        const T v = (ua[i + l] + b) * sa[i + l];
        ua[i + l] = v;
        lanes[l] += v;
      }
    }
    T sum = T(0);
    for (; i < end; ++i) {
      const T v = (ua[i] + b) * sa[i];
      ua[i] = v;
      sum += v;
    }
    for (int l = 0; l < kLanes; ++l) sum += lanes[l];
    acc[a] = sum;
  }
}

template <typename T>
HAML_VECTOR_CLONES void columns_head_categorical(T* __restrict u, const T* __restrict db,
                                                 const T* __restrict probs,
                                                 const T* __restrict weights,
                                                 T* __restrict p_dot_t, T* __restrict acc,
                                                 int64_t a_dim, int64_t n, int64_t begin,
                                                 int64_t end) {
  for (int64_t i = begin; i < end; ++i) p_dot_t[i] = T(0);
  for (int64_t a = 0; a < a_dim; ++a) {
    T* __restrict ua = u + a * n;
    const T* __restrict pa = probs + a * n;
    const T b = db[a];
    for (int64_t i = begin; i < end; ++i) {
      ua[i] += b;
      p_dot_t[i] += pa[i] * ua[i];
    }
  }
  for (int64_t a = 0; a < a_dim; ++a) {
    T* __restrict ua = u + a * n;
    const T* __restrict pa = probs + a * n;
    T lanes[kLanes] = {};
    int64_t i = begin;
    for (; i + kLanes <= end; i += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        const T v = weights[i + l] * pa[i + l] * (ua[i + l] - p_dot_t[i + l]);
        ua[i + l] = v;
        lanes[l] += v;
      }
    }
    T sum = T(0);
    for (; i < end; ++i) {
      const T v = weights[i] * pa[i] * (ua[i] - p_dot_t[i]);
      ua[i] = v;
      sum += v;
    }
    for (int l = 0; l < kLanes; ++l) sum += lanes[l];
    acc[a] = sum;
  }
}

void check_rows(const char* what, const at::Tensor& t, int64_t n, int64_t d) {
  TORCH_CHECK(t.is_contiguous() && t.numel() == n * d, "FisherOperator: ", what,
              " must be contiguous with ", n, "x", d, " elements, got ", t.sizes());
}

}  // namespace

int64_t partial_size(int64_t n, int64_t d) {
  const int64_t rows = rows_per_chunk(n);
  return ((n + rows - 1) / rows) * 3 * d;
}

void tangent_bias_act(at::Tensor& t, const at::Tensor& db, const at::Tensor& act_grad) {
  const int64_t n = t.size(0), d = t.size(1);
  check_rows("act_grad", act_grad, n, d);
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "fvp_tangent_bias_act", [&] {
    scalar_t* p_t = t.data_ptr<scalar_t>();
    const scalar_t* p_db = db.const_data_ptr<scalar_t>();
    const scalar_t* p_ag = act_grad.const_data_ptr<scalar_t>();
    at::parallel_for(0, n, row_grain(d), [&](int64_t b, int64_t e) {
      rows_bias_act<scalar_t>(p_t + b * d, p_db, p_ag + b * d, e - b, d);
    });
  });
}

void tangent_norm(at::Tensor& t, const at::Tensor& db, const at::Tensor& act_grad,
                  const at::Tensor& xhat, const at::Tensor& rstd, const at::Tensor& gamma,
                  const at::Tensor& d_gamma, const at::Tensor& d_beta, at::Tensor& y) {
  const int64_t n = t.size(0), d = t.size(1);
  check_rows("act_grad", act_grad, n, d);
  check_rows("xhat", xhat, n, d);
  check_rows("rstd", rstd, n, 1);
  check_rows("y", y, n, d);
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "fvp_tangent_norm", [&] {
    scalar_t* p_t = t.data_ptr<scalar_t>();
    scalar_t* p_y = y.data_ptr<scalar_t>();
    const scalar_t* p_ag = act_grad.const_data_ptr<scalar_t>();
    const scalar_t* p_x = xhat.const_data_ptr<scalar_t>();
    const scalar_t* p_r = rstd.const_data_ptr<scalar_t>();
    at::parallel_for(0, n, row_grain(d), [&](int64_t b, int64_t e) {
      rows_tangent_norm<scalar_t>(p_t + b * d, db.const_data_ptr<scalar_t>(), p_ag + b * d,
                                  p_x + b * d, p_r + b, gamma.const_data_ptr<scalar_t>(),
                                  d_gamma.const_data_ptr<scalar_t>(),
                                  d_beta.const_data_ptr<scalar_t>(), p_y + b * d, e - b, d);
    });
  });
}

void transposed_act(const at::Tensor& g, const at::Tensor& act_grad, at::Tensor& gz,
                    at::Tensor& out_bias, at::Tensor& partial) {
  const int64_t n = g.size(0), d = g.size(1);
  check_rows("act_grad", act_grad, n, d);
  check_rows("gz", gz, n, d);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "fvp_transposed_act", [&] {
    const scalar_t* p_g = g.const_data_ptr<scalar_t>();
    const scalar_t* p_ag = act_grad.const_data_ptr<scalar_t>();
    scalar_t* p_gz = gz.data_ptr<scalar_t>();
    at::Tensor* const outs[1] = {&out_bias};
    with_column_sums<scalar_t, 1>(n, d, partial, outs, [&](int64_t b, int64_t e, scalar_t* acc) {
      rows_transposed_act<scalar_t>(p_g + b * d, p_ag + b * d, p_gz + b * d, acc, e - b, d);
    });
  });
}

void transposed_norm_act(const at::Tensor& g, const at::Tensor& xhat, const at::Tensor& rstd,
                         const at::Tensor& gamma, const at::Tensor& act_grad, at::Tensor& gz,
                         at::Tensor& out_gamma, at::Tensor& out_beta, at::Tensor& out_bias,
                         at::Tensor& partial) {
  const int64_t n = g.size(0), d = g.size(1);
  check_rows("xhat", xhat, n, d);
  check_rows("rstd", rstd, n, 1);
  check_rows("act_grad", act_grad, n, d);
  check_rows("gz", gz, n, d);
  TORCH_CHECK(gz.data_ptr() != g.data_ptr(), "FisherOperator: gz must not be g");
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "fvp_transposed_norm_act", [&] {
    const scalar_t* p_g = g.const_data_ptr<scalar_t>();
    const scalar_t* p_x = xhat.const_data_ptr<scalar_t>();
    const scalar_t* p_r = rstd.const_data_ptr<scalar_t>();
    const scalar_t* p_ag = act_grad.const_data_ptr<scalar_t>();
    const scalar_t* p_gamma = gamma.const_data_ptr<scalar_t>();
    scalar_t* p_gz = gz.data_ptr<scalar_t>();
    at::Tensor* const outs[3] = {&out_gamma, &out_beta, &out_bias};
    with_column_sums<scalar_t, 3>(n, d, partial, outs, [&](int64_t b, int64_t e, scalar_t* acc) {
      rows_transposed_norm_act<scalar_t>(p_g + b * d, p_x + b * d, p_r + b, p_gamma, p_ag + b * d,
                                         p_gz + b * d, acc, acc + d, acc + 2 * d, e - b, d);
    });
  });
}

void head_gaussian(at::Tensor& u, const at::Tensor& db, const at::Tensor& scale,
                   at::Tensor& out_bias, at::Tensor& partial) {
  const int64_t a_dim = u.size(0), n = u.size(1);
  check_rows("scale", scale, a_dim, n);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "fvp_head_gaussian", [&] {
    scalar_t* p_u = u.data_ptr<scalar_t>();
    const scalar_t* p_db = db.const_data_ptr<scalar_t>();
    const scalar_t* p_s = scale.const_data_ptr<scalar_t>();
    at::Tensor* const outs[1] = {&out_bias};
    // Chunks of samples (columns here), each summing its share of every output row.
    with_column_sums<scalar_t, 1>(n, a_dim, partial, outs, [&](int64_t b, int64_t e, scalar_t* acc) {
      columns_head_gaussian<scalar_t>(p_u, p_db, p_s, acc, a_dim, n, b, e);
    });
  });
}

void head_categorical(at::Tensor& u, const at::Tensor& db, const at::Tensor& probs,
                      const at::Tensor& weights, at::Tensor& out_bias, at::Tensor& partial,
                      at::Tensor& column) {
  const int64_t a_dim = u.size(0), n = u.size(1);
  check_rows("probs", probs, a_dim, n);
  check_rows("weights", weights, n, 1);
  TORCH_CHECK(column.is_contiguous() && column.numel() >= n,
              "FisherOperator: the head's column workspace is too small");
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "fvp_head_categorical", [&] {
    scalar_t* p_u = u.data_ptr<scalar_t>();
    const scalar_t* p_db = db.const_data_ptr<scalar_t>();
    const scalar_t* p_p = probs.const_data_ptr<scalar_t>();
    const scalar_t* p_w = weights.const_data_ptr<scalar_t>();
    scalar_t* p_col = column.data_ptr<scalar_t>();
    at::Tensor* const outs[1] = {&out_bias};
    with_column_sums<scalar_t, 1>(n, a_dim, partial, outs, [&](int64_t b, int64_t e, scalar_t* acc) {
      columns_head_categorical<scalar_t>(p_u, p_db, p_p, p_w, p_col, acc, a_dim, n, b, e);
    });
  });
}

}  // namespace haml::fvp_cpu
