#!/usr/bin/env bash
# Training-step benchmarks of the ResNet backbones (presets sngan-cifar, wgangp-resnet-cifar,
# biggan-cifar at full width, 32x32) against their PyTorch twin (benches/backbone_step.py), same
# threads, batch, recipe and step structure; prints a markdown table with the ratio gantry /
# PyTorch and the parameter counts. The data is the built-in shapes (3 classes, fixed batch).
#
# Usage: scripts/bench_backbones.sh [THREADS] [STEPS] [BATCH] [DEVICE] [WARMUP]
#   Wall clock: median / fastest step in ms; the ratio uses the fastest steps.
# BENCH_CPU_TIME=1 scripts/bench_backbones.sh 1 [STEPS] [BATCH]
#   CPU time (user + sys) per step: that of a run with 1 + STEPS timed steps minus that of a run
#   with 1, divided by STEPS. Use it on shared machines, where other processes make multi-threaded
#   wall-clock times swing by 10x (libtorch's threads wait for each other at every op).
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
[ -x "$bin" ] || { echo "bench_backbones.sh: $bin is missing (build it: scripts/build.sh)" >&2; exit 2; }
tf32="${GANTRY_BENCH_TF32:-off}"
case "$tf32" in off) gtf32=false ;; on) gtf32=true ;; *) echo "bench_backbones.sh: GANTRY_BENCH_TF32 must be off or on, not $tf32" >&2; exit 2 ;; esac
threads="${1:-$(nproc)}"
steps="${2:-10}"
batch="${3:-64}"
device="${4:-cpu}"
warmup="${5:-2}"
py="${PYTHON:-$GANTRY_VENV/bin/python}"
common=(--set data.kind=shapes --set data.size=256 --set "train.batch_size=$batch" --set "train.threads=$threads"
        --set "train.device=$device" --set "train.tf32=$gtf32" --set train.log_every=0 --set train.sample_every=0 --set train.checkpoint_every=0)
twin=("$py" benches/backbone_step.py --threads "$threads" --batch "$batch" --device "$device" --classes 3 --tf32 "$tf32")
cpu_s() { # command...: CPU seconds (user + sys) of the whole process
  /usr/bin/time -f "%U %S" "$@" 2>&1 >/dev/null | tail -n 1 | awk '{print $1 + $2}'
}
if [ "${BENCH_CPU_TIME:-0}" = 1 ]; then
  echo "| step (TF32 $tf32) | batch | threads | gantry CPU ms/step | PyTorch CPU ms/step | ratio |"
  echo "|---|---|---|---|---|---|"
else
  echo "| step (TF32 $tf32) | batch | threads | gantry ms | PyTorch ms | ratio (fastest) | gantry MiB | PyTorch MiB | G params | D params |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
fi
for pair in sngan-cifar:sngan wgangp-resnet-cifar:wgangp biggan-cifar:biggan; do
  preset="${pair%%:*}"; arch="${pair##*:}"
  if [ "${BENCH_CPU_TIME:-0}" = 1 ]; then
    g1=$(cpu_s "$bin" bench --config "$preset" "${common[@]}" --warmup 1 --steps 1)
    gn=$(cpu_s "$bin" bench --config "$preset" "${common[@]}" --warmup 1 --steps $((1 + steps)))
    p1=$(cpu_s "${twin[@]}" --arch "$arch" --warmup 1 --steps 1)
    pn=$(cpu_s "${twin[@]}" --arch "$arch" --warmup 1 --steps $((1 + steps)))
    python3 -c "g = ($gn - $g1) / $steps; p = ($pn - $p1) / $steps
print(f'| $preset | $batch | $threads | {g * 1e3:.0f} | {p * 1e3:.0f} | {g / p:.2f} |')"
    continue
  fi
  g=$("$bin" bench --config "$preset" "${common[@]}" --steps "$steps" --warmup "$warmup" --what "$preset")
  p=$("${twin[@]}" --arch "$arch" --steps "$steps" --warmup "$warmup")
  python3 - "$preset" "$batch" "$g" "$p" <<'PY'
import json, sys
label, batch, g, p = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
print(f"| {label} | {batch} | {g['threads']} | {g['median_ms']:.0f} / {g['min_ms']:.0f} | {p['median_ms']:.0f} / {p['min_ms']:.0f} "
      f"| {g['min_ms']/p['min_ms']:.2f} "
      f"| {g['peak_rss_mib']:.0f} | {p['peak_rss_mib']:.0f} | {p['g_params']/1e6:.2f}M | {p['d_params']/1e6:.2f}M |")
PY
done
