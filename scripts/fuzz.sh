#!/usr/bin/env bash
# Fuzzes every reader of outside bytes with CASES generated inputs each (proptest, on stable
# Rust; the same harnesses run with 64 cases in the test suite): IDX, CIFAR binaries, PNG/JPEG
# through a folder data set, weights files (legacy and zip torch.save through the pickle reader,
# safetensors), pytorch-fid .npz, checkpoint meta.json and stores, configuration TOML. Prints a
# markdown table: target, cases, seconds, result. A failure prints the shrunk input; make it a
# regression test.
#
# Usage: scripts/fuzz.sh [CASES]
set -uo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
bash "$here/setup-venv.sh"
source "$here/env.sh"
cd "$GANTRY_ROOT"
cases="${1:-10000}"
export GANTRY_FUZZ_CASES="$cases" GANTRY_PYTHON="$GANTRY_VENV/bin/python"
cargo test --release --workspace --test fuzz --no-run -q 2>/dev/null
echo "| target | cases | seconds | result |"
echo "|---|---|---|---|"
failed=0
for target in gantry-data:idx_files gantry-data:cifar_binaries gantry-data:images_in_a_folder \
              gantry-data:zip_archives gantry-data:dataset_json \
              gantry-metrics:weights_files gantry-metrics:npz_statistics gantry-metrics:network_pickles \
              gantry:checkpoint_metadata_and_stores gantry:configuration_files gantry:foreign_weights; do
  crate="${target%%:*}"; test="${target#*:}"
  t0=$(date +%s.%N)
  if out=$(cargo test --release -q -p "$crate" --test fuzz -- --exact "$test" 2>&1); then
    result=ok
  else
    result=FAILED; failed=1
    echo "$out" | grep -E "minimal failing|panicked|Test failed" >&2
  fi
  t=$(python3 -c "import time; print(f'{time.time() - $t0:.0f}')")
  echo "| $crate $test | $cases per seed | $t | $result |"
done
exit "$failed"
