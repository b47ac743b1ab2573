#!/usr/bin/env bash
# Installs what haml needs, then builds haml (editable) with its native extension. Idempotent: a
# second run only rebuilds what changed.
#   scripts/setup.sh                 runtime only
#   scripts/setup.sh --dev           also the test tools, GoogleTest and the C++ tests
#   scripts/setup.sh --print-python  only choose (and create) the environment; print its python
# Where: the active virtual or conda environment if there is one, else the project's .venv (made
# here the first time); scripts/python_env.sh says why. PYTHON picks the Python to start from.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python_env.sh
dev=0
[[ "${1:-}" == "--dev" ]] && dev=1
if [[ "${1:-}" == "--print-python" ]]; then
  haml_select_python
  echo "$PYTHON"
  exit 0
fi
haml_select_python

# torch first and pinned to the CPU wheel this project is tested with: an unpinned or newer torch
# would download a CUDA build of several GB. An already installed torch is kept as it is.
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  echo "setup: installing torch ${HAML_TORCH_VERSION:-2.13.0}"
  haml_pip_install "torch==${HAML_TORCH_VERSION:-2.13.0}"
fi
# The build runs without isolation (so that it sees this torch), so its tools are installed here.
haml_pip_install "scikit-build-core>=0.10" "cmake>=3.25" ninja

build_args=()
extras="[mamujoco]"  # the main job trains on MaMuJoCo
if [[ $dev == 1 ]]; then
  # The tests run every environment that installs from pip, and haml sweep on Ray.
  extras="[dev,mamujoco,smax,mpe,pettingzoo,ray]"
  if [[ ! -f /usr/include/gtest/gtest.h ]]; then
    echo "setup: installing GoogleTest (Debian libgtest-dev)"
    if command -v apt-get >/dev/null; then
      SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
      $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libgtest-dev >/dev/null
    else
      echo "setup: apt-get not found; install GoogleTest yourself to build the C++ tests" >&2
    fi
  fi
  if [[ -f /usr/include/gtest/gtest.h ]]; then
    build_args+=(--config-settings=cmake.define.HAML_BUILD_TESTS=ON)
  fi
fi

echo "setup: building haml (native extension)"
haml_pip_install --no-build-isolation "${build_args[@]}" -e ".${extras}"
"$PYTHON" -c "import haml.ops as o; print('setup: haml', o.BUILD_INFO['version'] if o.BUILD_INFO else '(no native extension)', 'backend', o.backend())"
