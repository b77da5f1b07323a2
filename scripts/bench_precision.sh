#!/usr/bin/env bash
# Precision and memory-format benchmark: the DCGAN step of scripts/bench.sh and the
# stylegan2-32-small step, each in fp32, bf16 and bf16 + channels-last (and fp16 on CUDA), for
# gantry (`gantry bench --set train.precision=...`) and its PyTorch twins (benches/gan_step.py,
# benches/stylegan2_step.py with the same --precision / --channels-last), in the same run,
# alternating for ROUNDS rounds. Prints a markdown table with the ratio gantry / PyTorch and each
# side's speed-up over its own fp32.
#
# Usage: scripts/bench_precision.sh [THREADS] [STEPS] [DEVICE] [ROUNDS]
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
[ -x "$bin" ] || { echo "bench_precision.sh: $bin is missing (build it: scripts/build.sh)" >&2; exit 2; }
tf32="${GANTRY_BENCH_TF32:-off}"
case "$tf32" in off) gtf32=false ;; on) gtf32=true ;; *) echo "bench_precision.sh: GANTRY_BENCH_TF32 must be off or on, not $tf32" >&2; exit 2 ;; esac
threads="${1:-$(nproc)}"
steps="${2:-10}"
device="${3:-cpu}"
rounds="${4:-3}"
py="${PYTHON:-$GANTRY_VENV/bin/python}"
quiet=(--set train.log_every=0 --set train.sample_every=0 --set train.checkpoint_every=0
       --set "train.threads=$threads" --set "train.device=$device" --set data.size=256 --set "train.tf32=$gtf32")
dcgan=(--set data.kind=shapes --set train.batch_size=64 --set model.ngf=64 --set model.ndf=64)
sg2=(--config stylegan2-32-small)
variants=("fp32:" "bf16:" "bf16:cl")
if [ "${device%%:*}" = cuda ]; then variants+=("fp16:" "fp16:cl"); fi
median() { python3 -c "import json,statistics,sys; r=[json.loads(l) for l in sys.argv[1].split('\n') if l.strip()]; print(statistics.median(x['median_ms'] for x in r))" "$1"; }
echo "| step (TF32 $tf32) | precision | layout | gantry ms | PyTorch ms | ratio | gantry speed-up | PyTorch speed-up |"
echo "|---|---|---|---|---|---|---|---|"
for model in dcgan sg2; do
  base_g=""; base_p=""
  for v in "${variants[@]}"; do
    prec="${v%%:*}"; cl="${v#*:}"
    gset=(--set "train.precision=$prec"); pset=(--precision "$prec")
    if [ "$cl" = cl ]; then gset+=(--set train.channels_last=true); pset+=(--channels-last); fi
    g=""; p=""
    for _ in $(seq "$rounds"); do
      if [ "$model" = dcgan ]; then
        g+=$("$bin" bench "${dcgan[@]}" "${quiet[@]}" "${gset[@]}" --steps "$steps" --warmup 3)$'\n'
        p+=$("$py" benches/gan_step.py --threads "$threads" --device "$device" --tf32 "$tf32" --steps "$steps" --warmup 3 "${pset[@]}")$'\n'
      else
        g+=$("$bin" bench "${sg2[@]}" "${quiet[@]}" "${gset[@]}" --steps "$steps" --warmup 3)$'\n'
        p+=$("$py" benches/stylegan2_step.py --threads "$threads" --device "$device" --tf32 "$tf32" --steps "$steps" --warmup 3 "${pset[@]}")$'\n'
      fi
    done
    gm=$(median "$g"); pm=$(median "$p")
    [ -z "$base_g" ] && { base_g=$gm; base_p=$pm; }
    name=$([ "$model" = dcgan ] && echo "DCGAN" || echo "stylegan2-32-small")
    layout=$([ "$cl" = cl ] && echo "channels-last" || echo "default")
    python3 -c "print(f'| $name | $prec | $layout | {$gm:.1f} | {$pm:.1f} | {$gm/$pm:.2f} | {$base_g/$gm:.2f}x | {$base_p/$pm:.2f}x |')"
  done
done
