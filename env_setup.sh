#!/usr/bin/env bash
# Create .venv and install the pinned requirements. No conda. Idempotent: a second run with unchanged
# requirements returns at once (a hash of requirements.txt + pyproject.toml is stamped into .venv).
#   ./env_setup.sh            create or update .venv
#   PYTHON=python3.12 ./env_setup.sh   use another interpreter
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.requirements.sha256
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  echo "env_setup: $VENV is up to date ($STAMP)"
  exit 0
fi

[ -x "$VENV/bin/python" ] || { echo "env_setup: creating $VENV with $($PYTHON --version)"; "$PYTHON" -m venv "$VENV"; }
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }

# step 1: torch + build tools (the block above '--- step 2' in requirements.txt)
step1=$(sed -n '/step 1/,/step 2/p' requirements.txt | grep -E '^[A-Za-z]' || true)
echo "env_setup: installing $(echo $step1)"
pip install -q $step1
# step 2: the rest, built against that torch (sam2 otherwise builds a second torch in isolation)
echo "env_setup: installing the rest of requirements.txt"
SAM2_BUILD_CUDA=0 pip install -q --no-build-isolation -r requirements.txt
# the project itself, editable, so `python preprocess/x.py` and `python -m preprocess.x` both import it
pip install -q --no-build-isolation --no-deps -e .
"$VENV/bin/python" -c "import torch, sam2, pytorch_wavelets, ultralytics, av, cv2, pymatting" \
  || { echo "env_setup: import check failed" >&2; exit 1; }
echo "$want" > "$STAMP"
echo "env_setup: done; activate with 'source $VENV/bin/activate'"
