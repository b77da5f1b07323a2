#!/usr/bin/env bash
# Creates (or reuses) the project-local virtualenv holding torch==2.11.0, the libtorch that tch 0.24
# links against, plus numpy/scipy used by the reference scripts in tests and benchmarks.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

want_torch="$TORCH_VERSION"
if [ -x "$GANTRY_VENV/bin/python" ] \
  && "$GANTRY_VENV/bin/python" -c "import torch, torchvision, numpy, scipy, pytorch_fid, torch_fidelity, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$want_torch' else 1)" 2>/dev/null; then
  exit 0
fi

echo "gantry: setting up $GANTRY_VENV (torch==$want_torch; first time only, several minutes)" >&2
python_bin="${PYTHON:-python3}"
if [ ! -x "$GANTRY_VENV/bin/python" ]; then
  "$python_bin" -m venv "$GANTRY_VENV"
fi
"$GANTRY_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$GANTRY_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r "$GANTRY_ROOT/scripts/requirements.txt"
"$GANTRY_VENV/bin/python" -c "import torch; print('gantry: torch', torch.__version__, 'ready', flush=True)" >&2
