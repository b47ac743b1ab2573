#!/usr/bin/env bash
# The main job on a fresh machine: install and build haml (with MaMuJoCo) into the active virtual
# environment or the project's .venv (scripts/python_env.sh), then a short real training run: HAPPO
# on multi-agent HalfCheetah 2x3 with the tuned settings, 200k steps (measured times in README.md).
# It prints progress and ends with where the logs and the curve are.
# Extra arguments go to `haml train` (e.g. --steps 1000000, --algo hatrpo, algo.clip=0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/python_env.sh
haml_select_python --quiet  # the environment setup.sh installed into
"$PYTHON" -m haml.cli train --algo happo --env mamujoco --task HalfCheetah-2x3 --tuned \
  --steps 200000 --out runs/quickstart --overwrite \
  eval.every=10 eval.episodes=5 eval.num_envs=5 "$@"
