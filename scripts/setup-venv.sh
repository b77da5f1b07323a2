#!/usr/bin/env bash
# Creates (or reuses) the project-local virtualenv holding torch==2.11.0, the libtorch that tch 0.24
# links against, plus numpy/scipy used by the reference scripts in tests and benchmarks.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

# gloo's headers, which the torch wheel lacks and multi-process training on CPU needs to build
# (declarations only: the gloo that runs is the wheel's own). Debian's package, as root; without it
# gantry still builds and trains in one process, and says what is missing if asked for more.
if [ ! -f /usr/include/gloo/algorithm.h ] && [ -z "${GANTRY_GLOO_INCLUDE:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "gantry: installing Debian's libgloo-dev (gloo's headers, for multi-process training)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libgloo-dev >/dev/null \
      || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libgloo-dev >/dev/null; } \
      || echo "gantry: warning: could not install libgloo-dev; multi-process CPU training will be unavailable" >&2
  else
    echo "gantry: warning: gloo's headers are missing (apt-get install libgloo-dev as root); multi-process CPU training will be unavailable" >&2
  fi
fi

want_torch="$TORCH_VERSION"
if [ -x "$GANTRY_VENV/bin/python" ] \
  && "$GANTRY_VENV/bin/python" -c "import torch, torchvision, numpy, scipy, sklearn, pytorch_fid, torch_fidelity, sys, os; sys.exit(0 if torch.__version__.split('+')[0] == '$want_torch' and os.path.exists(os.path.join(os.path.dirname(torch.__file__), '..', 'nvidia', 'cu13', 'include', 'nv', 'target')) else 1)" 2>/dev/null; then
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
