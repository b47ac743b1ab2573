// Lets the per-element math of a kernel be written once and compiled by both g++ (CPU kernels,
// C++ tests) and nvcc (CUDA kernels). Includes nothing from ATen or the CUDA runtime.
#pragma once

#if defined(__CUDACC__)
#define HAML_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define HAML_HOST_DEVICE inline
#endif
