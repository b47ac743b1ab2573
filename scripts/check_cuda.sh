#!/usr/bin/env bash
# Compile-checks the CUDA side on a machine whose torch is a CPU build:
#  - every .cu file with nvcc for sm_80 and sm_90 (they include no ATen header, by design);
#  - every ATen glue file (*_cuda_impl.cpp, cpp_tests/test_cuda_parity.cpp) with the host compiler,
#    syntax only, against torch's headers and the CUDA runtime headers.
# Skips (exit 0, with a message) where nvcc is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC=${NVCC:-$(command -v nvcc || true)}
if [[ -z "$NVCC" && -x /usr/local/cuda/bin/nvcc ]]; then NVCC=/usr/local/cuda/bin/nvcc; fi
if [[ -z "$NVCC" ]]; then
  echo "check_cuda: nvcc not found; CUDA compile check skipped"
  exit 0
fi
# The toolkit's headers: CUDA_HOME, else the usual install prefix, else beside nvcc.
if [[ -z "${CUDA_HOME:-}" ]]; then
  if [[ -f /usr/local/cuda/include/cuda_runtime.h ]]; then CUDA_HOME=/usr/local/cuda
  else CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$NVCC")")"); fi
fi
# The Python whose torch the build uses: PYTHON if given, else the environment that setup.sh
# installs into, whose torch a system python3 may not have.
source scripts/python_env.sh
haml_require_torch_python "$(basename "$0")" || exit 1
TORCH_DIR=$("$PYTHON" -c "import os, torch; print(os.path.dirname(torch.__file__))")
ABI=$("$PYTHON" -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A CPU build of torch ships c10/cuda headers but not this generated one; its only content in a
# CUDA build is the shared-library switch.
mkdir -p "$work/stub/c10/cuda/impl"
printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' >"$work/stub/c10/cuda/impl/cuda_cmake_macros.h"

echo "check_cuda: $("$NVCC" --version | tail -n 1)"
status=0
mapfile -t cu_files < <(git ls-files 'csrc/*.cu' 'cpp_tests/*.cu' 2>/dev/null || find csrc cpp_tests -name '*.cu')
for f in "${cu_files[@]}"; do
  if "$NVCC" -std=c++17 -c "$f" -o "$work/out.o" -I csrc/include -I csrc -I "$(dirname "$f")" \
      -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
      -Xcompiler -Wall -Werror all-warnings; then
    echo "  ok   nvcc sm_80+sm_90  $f"
  else
    echo "  FAIL nvcc              $f"; status=1
  fi
done
mapfile -t glue_files < <(git ls-files 'csrc/*_cuda_impl.cpp' 'cpp_tests/test_cuda_parity.cpp' 2>/dev/null)
for f in "${glue_files[@]}"; do
  if ${CXX:-g++} -std=c++20 -fsyntax-only -D_GLIBCXX_USE_CXX11_ABI="$ABI" -DHAML_WITH_CUDA=1 \
      -I csrc/include -I csrc -I "$(dirname "$f")" -I "$work/stub" -I "$TORCH_DIR/include" \
      -I "$TORCH_DIR/include/torch/csrc/api/include" -I "$CUDA_HOME/include" "$f"; then
    echo "  ok   g++ (ATen glue)   $f"
  else
    echo "  FAIL g++ (ATen glue)   $f"; status=1
  fi
done
[[ ${#cu_files[@]} -gt 0 ]] || { echo "check_cuda: no .cu file found"; status=1; }
exit $status
