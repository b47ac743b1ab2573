#!/usr/bin/env bash
# Builds the C++ tests (cpp_tests/, against the same haml_core as the extension) with
# AddressSanitizer and UndefinedBehaviorSanitizer in their own build directory, then runs them with
# ctest. Any sanitizer report fails the run: UBSan does not recover, ASan aborts on its first
# error. Leak detection is off: libtorch keeps process-lifetime allocations (its registries) that
# LeakSanitizer would report at every exit. The CUDA kernels are not built here.
#
#   scripts/check_sanitizers.sh            # build dir build/sanitize; PYTHON selects the torch
set -euo pipefail
cd "$(dirname "$0")/.."
# The Python whose torch the build uses: PYTHON if given, else the environment that setup.sh
# installs into, whose torch a system python3 may not have.
source scripts/python_env.sh
haml_require_torch_python "$(basename "$0")" || exit 1
BUILD=${HAML_SANITIZE_BUILD:-build/sanitize}
JOBS=${JOBS:-$(nproc)}

SAN_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:strict_init_order=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B "$BUILD" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="$SAN_FLAGS" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DPython_EXECUTABLE="$(command -v "$PYTHON")" \
  -DHAML_BUILD_TESTS=ON -DHAML_WITH_CUDA=OFF >/dev/null
tests=$(sed -n 's/^set(HAML_CPP_TESTS \(.*\))$/\1/p' cpp_tests/CMakeLists.txt)
# shellcheck disable=SC2086  # one target per word
cmake --build "$BUILD" --parallel "$JOBS" --target $tests
ctest --test-dir "$BUILD" --output-on-failure --no-tests=error
echo "check_sanitizers: the C++ tests pass under ASan+UBSan"
