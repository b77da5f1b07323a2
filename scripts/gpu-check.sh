#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA GPU, torch 2.11.0+cu130 in its python and the release
# binary built elsewhere (target/release/gantry, carried over), in a few minutes:
#   1. trains every preset a few steps on CUDA in fp32 and in bf16 (data sets replaced by the
#      built-in shapes, Gaussian mixtures kept);
#   2. checks that the first step's losses on CUDA and on CPU agree (fp32, TF32 off);
#   3. times the DCGAN, +AdaptiveMix, +FQ and StyleGAN2 steps against their PyTorch twins on CUDA
#      in the same run (scripts/bench.sh), and both in fp32 / bf16 / fp16 / channels-last
#      (scripts/bench_precision.sh), the R3GAN step (scripts/bench_r3gan.sh) and the ResNet-18
#      classifier steps and PGD (scripts/bench_classify.sh), ADA's cost (scripts/bench_ada.sh) and
#      a U-GAT-IT iteration (scripts/bench_ugatit.sh);
# and prints one markdown report; exits non-zero if any check failed.
#
# Usage: scripts/gpu-check.sh [--dry]
#   --dry: the same on CPU with one step and tiny sizes (to check the script where no GPU is).
# Environment: GANTRY_BIN (default target/release/gantry), PYTHON (default .venv/bin/python, else
# python3).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"
dry=0
[ "${1:-}" = "--dry" ] && dry=1
bin="${GANTRY_BIN:-$root/target/release/gantry}"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py=python3; fi
fi
export PYTHON="$py" GANTRY_NO_BUILD=1
torch_lib="$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" || {
  echo "gpu-check: no torch in $py" >&2; exit 2; }
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -x "$bin" ] || { echo "gpu-check: $bin is missing (build it: scripts/build.sh)" >&2; exit 2; }

if [ "$dry" = 1 ]; then
  device=cpu; steps=1; bench_steps=2; shrink=(--set data.resolution=16 --set train.batch_size=4)
else
  device=cuda; steps=3; bench_steps=20; shrink=()
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=0
report=()
row() { report+=("| $1 | $2 | $3 |"); }

gpu="$("$py" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU")')"
echo "# gantry GPU check ($(date -u +%Y-%m-%d), $gpu, torch $("$py" -c 'import torch; print(torch.__version__)'), device $device)"
echo

# 1. Every preset, a few steps, fp32 and bf16.
for preset in $("$bin" presets | awk '{print $1}'); do
  data=()
  case "$preset" in
    gmm-*) ;;
    *) data=(--set data.kind=shapes) ;;
  esac
  extra=()
  case "$preset" in gmm-*) ;; *) extra=("${shrink[@]}") ;; esac
  for prec in fp32 bf16; do
    out="$work/$preset-$prec"
    t0=$(date +%s.%N)
    if msg=$("$bin" train --config "$preset" "${data[@]}" "${extra[@]}" --set "train.device=$device" \
        --set "train.precision=$prec" --set "train.steps=$steps" --set train.log_every=1 \
        --set train.sample_every=0 --set train.checkpoint_every=0 --set eval.every=0 \
        --set data.size=256 --out "$out" 2>&1); then
      t=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
      loss=$(python3 -c "import json; r=[json.loads(l) for l in open('$out/metrics.jsonl') if 'loss/d/adv' in l]; print(f\"D {r[-1]['loss/d/adv']:.4f} G {r[-1]['loss/g/adv']:.4f}\")")
      row "train $preset $prec" ok "$steps steps, $t s with start-up; last $loss"
    else
      failed=1
      row "train $preset $prec" FAILED "$(echo "$msg" | tail -n 1)"
    fi
  done
done

# 2. The first step on CUDA against the same step on CPU (fp32; TF32 and the autotuner off).
first=(--set data.kind=shapes --set train.steps=1 --set train.log_every=1 --set train.sample_every=0
       --set train.checkpoint_every=0 --set data.size=256 --set train.tf32=false --set train.cudnn_benchmark=false)
if "$bin" train "${first[@]}" --set train.device=cpu --out "$work/first-cpu" >/dev/null 2>&1 \
   && "$bin" train "${first[@]}" --set "train.device=$device" --out "$work/first-dev" >/dev/null 2>&1; then
  verdict=$(python3 - "$work/first-cpu/metrics.jsonl" "$work/first-dev/metrics.jsonl" <<'PY'
import json, sys
rows = [[json.loads(l) for l in open(p) if "loss/d/adv" in l][0] for p in sys.argv[1:3]]
# Tolerance: cuDNN and MKL-DNN sum in different orders; after one step of Adam the losses of a
# 32x32 DCGAN agree to about 1e-5 relative; 1e-3 leaves room for any GPU kernel choice.
worst = max(abs(rows[0][k] - rows[1][k]) / max(abs(rows[0][k]), 1e-6) for k in ("loss/d/adv", "loss/g/adv", "d/real", "d/fake"))
print(("ok" if worst < 1e-3 else "FAILED") + f" max relative difference {worst:.2e} (tolerance 1e-3)")
PY
)
  [ "${verdict%% *}" = ok ] || failed=1
  row "first step, $device vs cpu" "${verdict%% *}" "${verdict#* }"
else
  failed=1
  row "first step, $device vs cpu" FAILED "a run failed"
fi

echo "| check | result | detail |"
echo "|---|---|---|"
printf '%s\n' "${report[@]}"
echo

# 3. Step benchmarks against the PyTorch twins, same device, precision and memory format.
echo "## Training steps against PyTorch ($device)"
echo
if ! bash "$here/bench.sh" "$(nproc)" "$bench_steps" "$device" 1; then failed=1; echo "bench.sh FAILED"; fi
echo
if ! bash "$here/bench_precision.sh" "$(nproc)" "$bench_steps" "$device" 1; then failed=1; echo "bench_precision.sh FAILED"; fi
echo
if [ "$dry" = 1 ]; then r3=(1 1 16 2 1); else r3=("$bench_steps" 1 64 4 1); fi
if ! bash "$here/bench_r3gan.sh" "$(nproc)" "${r3[@]}" "$device"; then failed=1; echo "bench_r3gan.sh FAILED"; fi
echo
if [ "$dry" = 0 ]; then
  if ! bash "$here/bench_classify.sh" "$(nproc)" "$bench_steps" 1 "$device"; then failed=1; echo "bench_classify.sh FAILED"; fi
  echo
  if ! bash "$here/bench_ada.sh" "$(nproc)" "$bench_steps" 1 0.5 "$device"; then failed=1; echo "bench_ada.sh FAILED"; fi
  echo
  if ! bash "$here/bench_ugatit.sh" "$(nproc)" "$bench_steps" 1 "$device"; then failed=1; echo "bench_ugatit.sh FAILED"; fi
  echo
fi
[ "$failed" = 0 ] && echo "gpu-check: all checks passed" || echo "gpu-check: some checks FAILED"
exit "$failed"
