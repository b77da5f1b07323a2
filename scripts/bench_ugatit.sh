#!/usr/bin/env bash
# U-GAT-IT iteration (issue 15): `gantry bench --config ugatit-light-64` (light, 64x64, width 16,
# 2 residual blocks, critics of 6 and 4 layers) against its PyTorch twin (benches/ugatit_step.py,
# the official loop on the networks of tests/pyref/ugatit_ref.py), at batch 1 and 4, ROUNDS rounds
# alternating; the twin both as the reference runs it (translations recomputed for the G step)
# and doing gantry's work (--reuse). Then gantry with FQ in the global critics (ugatit-light-64-fq)
# and its overhead. Prints a markdown table.
# Usage: scripts/bench_ugatit.sh [THREADS] [STEPS] [ROUNDS] [DEVICE]
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
# GANTRY_BIN: the binary to time (default target/release/gantry, built first unless GANTRY_BIN is
# set or GANTRY_NO_BUILD=1: a machine without the toolchain, e.g. a GPU box that received the
# binary); PYTHON: the python with torch for the twins. TF32: gantry turns TF32 (and cuDNN's
# autotuner) off for every command and gantry bench of a translation preset has no key to turn it on, so the
# twin runs with TF32 off too and GANTRY_BENCH_TF32=on is ignored.
[ "${GANTRY_NO_BUILD:-0}" = 1 ] || [ -n "${GANTRY_BIN:-}" ] || bash "$here/build.sh" --quiet
source "$here/env.sh"
bin="${GANTRY_BIN:-$GANTRY_ROOT/target/release/gantry}"
[[ "$bin" = /* ]] || bin="$PWD/$bin"
cd "$GANTRY_ROOT"
[ -x "$bin" ] || { echo "bench_ugatit.sh: $bin is missing (build it: scripts/build.sh)" >&2; exit 2; }
tf32=off
[ "${GANTRY_BENCH_TF32:-off}" = off ] || echo "bench_ugatit.sh: GANTRY_BENCH_TF32=$GANTRY_BENCH_TF32 ignored: gantry bench of a translation preset has no TF32 key (off on both sides)" >&2
threads="${1:-$(nproc)}"
steps="${2:-10}"
rounds="${3:-2}"
device="${4:-cpu}"
py="${PYTHON:-$GANTRY_VENV/bin/python}"
med() { python3 -c "import json,statistics,sys; r=[json.loads(l) for l in sys.argv[1].split('\n') if l.strip()]; print(statistics.median(x['median_ms'] for x in r))" "$1"; }
echo "| U-GAT-IT light 64x64, TF32 off | batch | threads | gantry ms | gantry + FQ ms | FQ overhead | PyTorch (reference loop) ms | ratio | PyTorch (same work) ms | ratio |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for b in 1 4; do
  g="" f="" p="" q=""
  for _ in $(seq "$rounds"); do
    common=(--set "train.threads=$threads" --set "train.device=$device" --set "train.batch_size=$b" --steps "$steps" --warmup 2)
    g+="$("$bin" bench --config ugatit-light-64 "${common[@]}")"$'\n'
    f+="$("$bin" bench --config ugatit-light-64-fq "${common[@]}")"$'\n'
    p+="$("$py" benches/ugatit_step.py --threads "$threads" --device "$device" --tf32 "$tf32" --batch "$b" --steps "$steps" --warmup 2)"$'\n'
    q+="$("$py" benches/ugatit_step.py --threads "$threads" --device "$device" --tf32 "$tf32" --batch "$b" --steps "$steps" --warmup 2 --reuse)"$'\n'
  done
  gm=$(med "$g"); fm=$(med "$f"); pm=$(med "$p"); qm=$(med "$q")
  python3 -c "print(f'| light, ch 16, 2 blocks | $b | $threads | {$gm:.0f} | {$fm:.0f} | {($fm/$gm-1)*100:+.0f}% | {$pm:.0f} | {$gm/$pm:.2f} | {$qm:.0f} | {$gm/$qm:.2f} |')"
done
