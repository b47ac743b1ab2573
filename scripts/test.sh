#!/usr/bin/env bash
# Installs everything the tests need into the active virtual environment or the project's .venv
# (scripts/python_env.sh), builds haml with its C++ tests, then runs pytest (not the slow-marked
# tests unless HAML_SLOW=1) and ctest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
source scripts/python_env.sh
haml_select_python --quiet  # the environment setup.sh installed into
# Its bin/ first on PATH: the `haml` command and the ctest that setup installed.
PATH="$(dirname "$PYTHON"):$PATH"

# The suite must test the native kernels, not silently fall back to the references.
export HAML_REQUIRE_NATIVE=1
marker=(-m "not slow")
[[ "${HAML_SLOW:-0}" == 1 ]] && marker=()
# pytest exits 5 when it collects no test: with `set -e` that fails this script too.
"$PYTHON" -m pytest python_tests "${marker[@]}" "$@"

ctest_file=$(ls -t build/*/cpp_tests/CTestTestfile.cmake 2>/dev/null | head -n 1 || true)
if [[ -z "$ctest_file" ]]; then
  echo "test: C++ tests were not built (GoogleTest missing?)" >&2
  exit 1
fi
ctest --test-dir "$(dirname "$(dirname "$ctest_file")")" --output-on-failure --no-tests=error
