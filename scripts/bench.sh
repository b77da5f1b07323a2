#!/usr/bin/env bash
# Training-step benchmarks: gantry and its PyTorch twin (benches/gan_step.py) in the same run,
# same thread count, same model; prints a markdown table with the ratio gantry / PyTorch.
# Each pair runs ROUNDS times, alternating gantry and PyTorch so that drift in the machine's speed
# hits both; the table shows the median over rounds of each side's median step.
# Usage: scripts/bench.sh [THREADS] [STEPS] [DEVICE] [ROUNDS]
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
[ -x "$bin" ] || { echo "bench.sh: $bin is missing (build it: scripts/build.sh)" >&2; exit 2; }
tf32="${GANTRY_BENCH_TF32:-off}"
case "$tf32" in off) gtf32=false ;; on) gtf32=true ;; *) echo "bench.sh: GANTRY_BENCH_TF32 must be off or on, not $tf32" >&2; exit 2 ;; esac
threads="${1:-$(nproc)}"
steps="${2:-30}"
device="${3:-cpu}"
rounds="${4:-3}"
py="${PYTHON:-$GANTRY_VENV/bin/python}"
common=(--set data.kind=shapes --set data.size=256 --set train.batch_size=64 --set model.ngf=64 --set model.ndf=64
        --set "train.threads=$threads" --set "train.device=$device" --set "train.tf32=$gtf32"
        --set train.log_every=0 --set train.sample_every=0 --set train.checkpoint_every=0 --steps "$steps")
row() { # label, gantry json lines, pytorch json lines
  python3 - "$1" "$2" "$3" <<'PY'
import json, statistics, sys
label = sys.argv[1]
g = [json.loads(l) for l in sys.argv[2].split("\n") if l.strip()]
p = [json.loads(l) for l in sys.argv[3].split("\n") if l.strip()]
gm = statistics.median(r["median_ms"] for r in g)
pm = statistics.median(r["median_ms"] for r in p)
print(f"| {label} | {g[0]['threads']} | {gm:.1f} | {pm:.1f} | {gm/pm:.2f} | {max(r['peak_rss_mib'] for r in g):.0f} | {max(r['peak_rss_mib'] for r in p):.0f} |")
PY
}
echo "| step (TF32 $tf32) | threads | gantry ms | PyTorch ms | ratio | gantry MiB | PyTorch MiB |"
echo "|---|---|---|---|---|---|---|"
run() { # label, gantry sets..., -- python args...
  local label="$1"; shift
  local gsets=() pyargs=()
  while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do gsets+=(--set "$1"); shift; done
  [ "$#" -gt 0 ] && shift
  pyargs=("$@")
  local g="" p=""
  for _ in $(seq "$rounds"); do
    g+=$("$bin" bench "${common[@]}" ${gsets[@]+"${gsets[@]}"} --what "$label")$'\n'
    p+=$("$py" benches/gan_step.py --threads "$threads" --steps "$steps" --device "$device" --tf32 "$tf32" ${pyargs[@]+"${pyargs[@]}"})$'\n'
  done
  row "$label" "$g" "$p"
}
run "DCGAN" --
run "DCGAN + AdaptiveMix (PyTorch: 3 passes)" adaptivemix.enabled=true -- --am
run "DCGAN + FQ K=256 (b16, b8)" fq.enabled=true fq.k=256 'fq.layers=["b16","b8"]' -- --fq-k 256
run "DCGAN + FQ K=1024 (b16, b8)" fq.enabled=true fq.k=1024 'fq.layers=["b16","b8"]' -- --fq-k 1024
