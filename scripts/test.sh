#!/usr/bin/env bash
# Set everything up (first time only), then run the whole test suite (release profile: the same
# build the binary uses, so nothing compiles twice). Extra arguments go to `cargo test`.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
bash "$here/setup-venv.sh"
source "$here/env.sh"
cd "$GANTRY_ROOT"
export GANTRY_PYTHON="$GANTRY_VENV/bin/python"
# 2-core CI machines: one libtorch thread per test process keeps parallel tests from thrashing.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
cargo build --release --workspace --bins
cargo test --release --workspace "$@"
