#!/usr/bin/env bash
# ADA's cost per training step (issue 18): `gantry bench --config stylegan2-32-small` without and
# with `ada.enabled=true ada.mode=fixed ada.p=P` (bgc pipeline on reals, fakes and through R1),
# against the PyTorch twin (benches/stylegan2_step.py without and with --ada-p P, the reference
# pipeline transcribed in tests/pyref/ada_ref.py with a gradfix-style grid sampler), in the same
# run and thread count, ROUNDS rounds alternating. Prints a markdown table: each side's step,
# the ratio gantry / PyTorch, and each side's ADA overhead over its own plain step. The means
# include the amortised R1 steps (every 16), whose backward goes through the pipeline twice.
# Usage: scripts/bench_ada.sh [THREADS] [STEPS] [ROUNDS] [P] [DEVICE]
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
# GANTRY_BIN: the binary to time (default target/release/gantry, built first unless GANTRY_BIN is
# set or GANTRY_NO_BUILD=1: a machine without the toolchain, e.g. a GPU box that received the
# binary); PYTHON: the python with torch for the twins; GANTRY_BENCH_TF32 (off | on; default off,
# as `gantry bench`): TF32 in CUDA matmuls and cuDNN convolutions, set the same on both sides.
[ "${GANTRY_NO_BUILD:-0}" = 1 ] || [ -n "${GANTRY_BIN:-}" ] || bash "$here/build.sh" --quiet
source "$here/env.sh"
bin="${GANTRY_BIN:-$GANTRY_ROOT/target/release/gantry}"
[[ "$bin" = /* ]] || bin="$PWD/$bin"
cd "$GANTRY_ROOT"
[ -x "$bin" ] || { echo "bench_ada.sh: $bin is missing (build it: scripts/build.sh)" >&2; exit 2; }
tf32="${GANTRY_BENCH_TF32:-off}"
case "$tf32" in off) gtf32=false ;; on) gtf32=true ;; *) echo "bench_ada.sh: GANTRY_BENCH_TF32 must be off or on, not $tf32" >&2; exit 2 ;; esac
threads="${1:-$(nproc)}"
steps="${2:-16}"
rounds="${3:-2}"
p="${4:-0.5}"
device="${5:-cpu}"
py="${PYTHON:-$GANTRY_VENV/bin/python}"
stat() { python3 -c "import json,statistics,sys; r=[json.loads(l) for l in sys.argv[1].split('\n') if l.strip()]; print(statistics.median(x['$2'] for x in r))" "$1"; }
declare -A G P
for _ in $(seq "$rounds"); do
  for v in plain ada; do
    if [ $v = ada ]; then gset=(--set ada.enabled=true --set ada.mode=fixed --set "ada.p=$p"); pset=(--ada-p "$p"); else gset=(); pset=(); fi
    G[$v]+="$("$bin" bench --config stylegan2-32-small --set "train.threads=$threads" --set "train.device=$device" \
             --set "train.tf32=$gtf32" "${gset[@]}" --steps "$steps" --warmup 2)"$'\n'
    P[$v]+="$("$py" benches/stylegan2_step.py --threads "$threads" --device "$device" --tf32 "$tf32" --steps "$steps" --warmup 2 "${pset[@]}")"$'\n'
  done
done
echo "| stylegan2-32-small, batch 32, TF32 $tf32 | threads | gantry median / mean ms | PyTorch median / mean ms | ratio (median) | gantry ADA overhead | PyTorch ADA overhead |"
echo "|---|---|---|---|---|---|---|"
for v in plain ada; do
  gm=$(stat "${G[$v]}" median_ms); pm=$(stat "${P[$v]}" median_ms)
  ga=$(stat "${G[$v]}" mean_ms); pa=$(stat "${P[$v]}" mean_ms)
  g0=$(stat "${G[plain]}" median_ms); p0=$(stat "${P[plain]}" median_ms)
  name=$([ $v = ada ] && echo "ADA bgc, p = $p" || echo "no augmentation")
  python3 -c "print(f'| $name | $threads | {$gm:.0f} / {$ga:.0f} | {$pm:.0f} / {$pa:.0f} | {$gm/$pm:.2f} | {($gm/$g0-1)*100:+.0f}% | {($pm/$p0-1)*100:+.0f}% |')"
done
