#!/usr/bin/env bash
# The main job on a fresh machine: install and build haml, then run it. Until training lands this
# is the kernel benchmark: native kernels vs their PyTorch references, as a table and JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m haml.bench ops "$@"
