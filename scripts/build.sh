#!/usr/bin/env bash
# Sets up the virtualenv (first time only) and builds the release binary target/release/gantry.
# Incremental: reuses .venv and target/ when present.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
bash "$here/setup-venv.sh"
source "$here/env.sh"
cd "$GANTRY_ROOT"
cargo build --release --workspace --bins "$@"
