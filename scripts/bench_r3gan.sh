#!/usr/bin/env bash
# R3GAN training step (issue 18): `gantry bench --config r3gan-small` (relativistic loss with R1
# and R2 on every D step, ResNeXt G and D) against its PyTorch twin (benches/r3gan_step.py, the
# networks of tests/pyref/r3gan_ref.py), same threads, batch, width and step structure, ROUNDS
# rounds alternating the two; prints a markdown table (medians over rounds of each side's median).
# WIDTH scales the model (the paper's CIFAR-10 width, 768, needs a GPU).
# Usage: scripts/bench_r3gan.sh [THREADS] [STEPS] [ROUNDS] [WIDTH] [CARDINALITY] [BLOCKS] [DEVICE]
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
[ -x "$bin" ] || { echo "bench_r3gan.sh: $bin is missing (build it: scripts/build.sh)" >&2; exit 2; }
tf32="${GANTRY_BENCH_TF32:-off}"
case "$tf32" in off) gtf32=false ;; on) gtf32=true ;; *) echo "bench_r3gan.sh: GANTRY_BENCH_TF32 must be off or on, not $tf32" >&2; exit 2 ;; esac
threads="${1:-$(nproc)}"
steps="${2:-10}"
rounds="${3:-3}"
width="${4:-64}"
card="${5:-4}"
blocks="${6:-1}"
device="${7:-cpu}"
py="${PYTHON:-$GANTRY_VENV/bin/python}"
g="" p=""
for _ in $(seq "$rounds"); do
  g+="$("$bin" bench --config r3gan-small --set "train.threads=$threads" --set "train.device=$device" --set "train.tf32=$gtf32" --set "model.widths=[$width]" \
        --set "model.cardinality=[$card]" --set "model.blocks=[$blocks]" --steps "$steps" --warmup 2)"$'\n'
  p+="$("$py" benches/r3gan_step.py --threads "$threads" --device "$device" --tf32 "$tf32" --width "$width" --cardinality "$card" \
        --blocks "$blocks" --steps "$steps" --warmup 2)"$'\n'
done
echo "| R3GAN step, batch 32, 32x32, TF32 $tf32 | width | threads | gantry ms | PyTorch ms | ratio | gantry MiB | PyTorch MiB |"
echo "|---|---|---|---|---|---|---|---|"
python3 - "$width" "$g" "$p" <<'PY'
import json, statistics, sys
width = sys.argv[1]
g = [json.loads(l) for l in sys.argv[2].split("\n") if l.strip()]
p = [json.loads(l) for l in sys.argv[3].split("\n") if l.strip()]
gm = statistics.median(r["median_ms"] for r in g)
pm = statistics.median(r["median_ms"] for r in p)
print(f"| relativistic + R1 + R2, EMA | {width} | {g[0]['threads']} | {gm:.0f} | {pm:.0f} | {gm/pm:.2f} "
      f"| {max(r['peak_rss_mib'] for r in g):.0f} | {max(r['peak_rss_mib'] for r in p):.0f} |")
PY
