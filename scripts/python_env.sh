# Sourced (not run) by setup.sh, main.sh, test.sh and the check scripts: chooses the Python
# environment that haml is installed into and run from, and sets PYTHON to its interpreter (an
# absolute path).
#
#   - A Python that already runs in a virtual environment (an activated venv or virtualenv,
#     pyenv-virtualenv, `PYTHON=/path/to/env/bin/python`) or in a conda environment: that one.
#   - Any other Python (a system Python, which on Debian/Ubuntu refuses pip installs under PEP 668,
#     or a pyenv / Homebrew / python.org Python whose global site-packages should stay untouched):
#     the project's own environment .venv, created with `$PYTHON -m venv .venv` the first time.
#
# PYTHON (default python3) is the interpreter to start from; HAML_VENV (default .venv) names the
# project environment's directory. Which environment was chosen is said on stderr.

# Runs in the repository root (the scripts cd there first).
haml_select_python() {
  local quiet=0
  [[ "${1:-}" == --quiet ]] && quiet=1
  local base=${PYTHON:-python3} venv=${HAML_VENV:-.venv} found kind executable prefix
  if ! found=$("$base" -c '
import os, sys
if sys.prefix != sys.base_prefix:
    kind = "venv"
elif os.path.isdir(os.path.join(sys.prefix, "conda-meta")):
    kind = "conda"
else:
    kind = "system"
print(kind, sys.executable, sys.prefix, sep="\n")
' 2>/dev/null); then
    echo "haml: cannot run Python '$base'; install Python >= 3.10 or set PYTHON to one" >&2
    return 1
  fi
  { read -r kind; read -r executable; read -r prefix; } <<<"$found"
  if [[ $kind != system ]]; then
    PYTHON=$executable
    [[ $quiet == 1 ]] || echo "haml: using the active $kind environment $prefix" >&2
    return 0
  fi
  if [[ ! -e "$venv/bin/python" ]]; then
    echo "haml: no virtual environment is active and $executable is not one: creating the project" \
      "environment $venv ($base -m venv $venv)" >&2
    if ! "$base" -m venv "$venv"; then
      echo "haml: could not create $venv. On Debian/Ubuntu: sudo apt-get install python3-venv;" \
        "or activate an environment of your own and rerun" >&2
      return 1
    fi
  fi
  PYTHON="$(cd "$venv" && pwd)/bin/python"
  if ! "$PYTHON" -c "" 2>/dev/null; then
    echo "haml: $PYTHON does not run (was the Python it was made from removed?); delete $venv" \
      "and rerun" >&2
    return 1
  fi
  [[ $quiet == 1 ]] || echo "haml: using the project environment $venv" \
    "(to use it in a shell: source $venv/bin/activate)" >&2
}

# pip of the chosen environment (call haml_select_python first).
haml_pip_install() {
  "$PYTHON" -m pip install --disable-pip-version-check -q "$@"
}

# PYTHON as the caller set it, else haml_select_python's choice; an error naming setup.sh (and
# status 1) where that Python has no torch. $1: the calling script's name, for the message.
haml_require_torch_python() {
  if [[ -z "${PYTHON:-}" ]]; then
    haml_select_python --quiet || return 1
  fi
  if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "$1: $PYTHON has no torch; run bash scripts/setup.sh --dev first, or set PYTHON" >&2
    return 1
  fi
}
