#!/usr/bin/env bash
# Set everything up (first time only), then run the whole test suite (release profile: the same
# build the binary uses, so nothing compiles twice). Extra arguments go to `cargo test`.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
bash "$here/setup-venv.sh"
# Headless Chromium for the report browser test (Debian's package, installed when missing).
bash "$here/setup-chromium.sh" || echo "test.sh: no Chromium; the report browser test will fail" >&2
source "$here/env.sh"
cd "$GANTRY_ROOT"
export GANTRY_PYTHON="$GANTRY_VENV/bin/python"
# 2-core CI machines: one libtorch thread per test process keeps parallel tests from thrashing.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
cargo build --release --workspace --bins
# Tee the run so the last line is a plain total across every test binary (cargo's own last line
# belongs to the final crate's doc tests, which are empty).
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --workspace "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
