// Argument checks shared by every kernel's entry point, so that each check and its message is
// written once. A failed check raises c10::Error, which Python sees as RuntimeError: the process
// never aborts on bad input.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#define HAML_CHECK_FLOATING(op, name, t)                                                  \
  TORCH_CHECK((t).scalar_type() == at::kFloat || (t).scalar_type() == at::kDouble,        \
              op ": '" name "' must be float32 or float64, got ", (t).scalar_type())

#define HAML_CHECK_DTYPE(op, name, t, dtype)                                              \
  TORCH_CHECK((t).scalar_type() == (dtype), op ": '" name "' must have dtype ", (dtype),  \
              ", got ", (t).scalar_type())

#define HAML_CHECK_SAME_SHAPE(op, name, t, ref_name, ref)                                 \
  TORCH_CHECK((t).sizes() == (ref).sizes(), op ": '" name "' must have the shape of '"    \
              ref_name "' ", (ref).sizes(), ", got ", (t).sizes())

#define HAML_CHECK_SAME_DEVICE(op, name, t, ref_name, ref)                                \
  TORCH_CHECK((t).device() == (ref).device(), op ": '" name "' is on ", (t).device(),     \
              " but '" ref_name "' is on ", (ref).device())

// For the CUDA glue only (it includes the CUDA runtime): a failed kernel launch becomes an error.
#define HAML_CHECK_CUDA_LAUNCH(op, err_expr)                                             \
  do {                                                                                    \
    const cudaError_t haml_err_ = (err_expr);                                             \
    TORCH_CHECK(haml_err_ == cudaSuccess, op ": CUDA launch failed: ",                    \
                cudaGetErrorString(haml_err_));                                           \
  } while (0)
