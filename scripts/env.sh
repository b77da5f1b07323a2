# Sourced by the other scripts: where the project-local virtualenv lives and how tch finds libtorch.
# shellcheck shell=bash
GANTRY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export GANTRY_ROOT
export GANTRY_VENV="${GANTRY_VENV:-$GANTRY_ROOT/.venv}"
export TORCH_VERSION="2.11.0"
# tch-rs's build script asks this python for libtorch's location.
export LIBTORCH_USE_PYTORCH=1
export PATH="$GANTRY_VENV/bin:$PATH"
if [ -d "$GANTRY_VENV" ]; then
  torch_lib="$(ls -d "$GANTRY_VENV"/lib/python3*/site-packages/torch/lib 2>/dev/null | head -n 1)"
  if [ -n "$torch_lib" ]; then
    export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
fi
