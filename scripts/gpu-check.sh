#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA GPU, torch 2.11.0+cu130 in its python and the release
# binary built elsewhere (target/release/gantry, carried over), in a few minutes:
#   0. prints what the binary needs from the system (the highest GLIBC_2.x and GLIBCXX_3.4.x
#      symbol versions it asks for) next to what the system has, and refuses (exit 2, one line)
#      when the system's glibc or libstdc++ is older, when numpy is missing from the python of the
#      PyTorch twins and `pip install numpy` cannot add it, or when that python has no torch;
#   1. trains every preset of `gantry presets` a few steps on CUDA: the GAN presets in fp32 and in
#      bf16 (data sets replaced by the built-in shapes, Gaussian mixtures kept, data.size =
#      max(256, the preset's batch size)), the translation presets (U-GAT-IT: both domains from
#      the shapes, `data.a=shapes#0 data.b=shapes#1`) and the classification presets (`gantry
#      classify train`, data.spec=shapes, data.limit = max(256, (steps + 1) x batch), one epoch)
#      in fp32 only: their configurations have no train.precision;
#   2. checks that the first step's losses on CUDA and on CPU agree (fp32, TF32 off);
#   3. times the DCGAN, +AdaptiveMix, +FQ and StyleGAN2 steps against their PyTorch twins on CUDA
#      in the same run (scripts/bench.sh), and both in fp32 / bf16 / fp16 / channels-last
#      (scripts/bench_precision.sh), the R3GAN step (scripts/bench_r3gan.sh) and the ResNet-18
#      classifier steps and PGD (scripts/bench_classify.sh), ADA's cost (scripts/bench_ada.sh) and
#      a U-GAT-IT iteration (scripts/bench_ugatit.sh), with TF32 set the same way on both sides
#      (GANTRY_BENCH_TF32, default off as `gantry bench`);
# and prints one markdown report; exits non-zero if any check failed.
#
# Usage: scripts/gpu-check.sh [--dry | --deps]
#   --dry: the same on CPU (to check the script where no GPU is): the same presets, keys, batch
#     sizes and data.size / data.limit rule as the real run, 1 step instead of 3 and the
#     benchmarks with 1-2 steps and 1 round. Only where a preset does not fit this CPU at its real
#     size does --dry lower its resolution / width keys, never the batch nor a key the real run
#     sets (see `dry_shrink` below):
#       r3gan-cifar            model.widths=[32] model.cardinality=[4] data.resolution=16
#                              (width 768 at batch 512 needs > 22 GB of host memory)
#       stylegan2-256          data.resolution=16 model.channel_base=1024 model.channel_max=64
#                              (config F at 256x256, batch 64: minutes per step on 2 cores)
#       ugatit-256             data.resolution=128 model.ch=16 (19.5 GB at 256x256, ch 64)
#       adaptivemix-wrn-cifar  model.widen=1 (WRN-28-10, batch 128: minutes per step)
#   --deps: only step 0 (the binary's and the twins' dependencies), then exit.
# Environment: GANTRY_BIN (default target/release/gantry), PYTHON (default .venv/bin/python, else
# python3), GANTRY_BENCH_TF32 (off | on, default off: TF32 in both sides of the benchmarks).
# For testing the refusal of step 0 only: GANTRY_CHECK_SYSTEM_GLIBC and GANTRY_CHECK_SYSTEM_GLIBCXX
# replace the system's versions (e.g. GANTRY_CHECK_SYSTEM_GLIBC=2.31 GANTRY_CHECK_SYSTEM_GLIBCXX=3.4.28).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
dry=0
deps_only=0
for arg in "$@"; do
  case "$arg" in
    --dry) dry=1 ;;
    --deps) deps_only=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-check: unknown argument $arg (usage: scripts/gpu-check.sh [--dry | --deps])" >&2; exit 2 ;;
  esac
done
bin="${GANTRY_BIN:-$root/target/release/gantry}"
[[ "$bin" = /* ]] || bin="$PWD/$bin"
cd "$root" || exit 2
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py=python3; fi
fi
tf32="${GANTRY_BENCH_TF32:-off}"
case "$tf32" in off|on) ;; *) echo "gpu-check: GANTRY_BENCH_TF32 must be off or on, not $tf32" >&2; exit 2 ;; esac
export PYTHON="$py" GANTRY_NO_BUILD=1 GANTRY_BIN="$bin" GANTRY_BENCH_TF32="$tf32"
[ -x "$bin" ] || { echo "gpu-check: $bin is missing (build it: scripts/build.sh)" >&2; exit 2; }
torch_lib="$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)" || {
  echo "gpu-check: no torch in $py (set PYTHON to the python with torch 2.11.0)" >&2; exit 2; }
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# 0. What the binary needs from the system, against what the system has.
ver_ge() { # A B: whether version A >= version B
  [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1)" = "$2" ]
}
needed() { # PREFIX (GLIBC or GLIBCXX): the highest PREFIX_x.y[.z] symbol version the binary asks for
  local names
  if command -v readelf >/dev/null 2>&1; then
    names=$(readelf -V --wide "$bin" 2>/dev/null | grep -oE "Name: $1_[0-9]+(\.[0-9]+)*" | sed 's/^Name: //')
  elif command -v objdump >/dev/null 2>&1; then
    names=$(objdump -T "$bin" 2>/dev/null | grep -oE "\b$1_[0-9]+(\.[0-9]+)*")
  else # the version names are strings of .dynstr
    names=$(grep -aoE "\b$1_[0-9]+(\.[0-9]+)*" "$bin")
  fi
  printf '%s\n' "$names" | sed -n "s/^$1_//p" | sort -uV | tail -n 1
}
system_glibc() {
  local v
  v=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
  [ -n "$v" ] || v=$(ldd --version 2>/dev/null | head -n 1 | grep -oE '[0-9]+\.[0-9]+(\.[0-9]+)?$')
  echo "$v"
}
system_libstdcxx() { # the libstdc++.so.6 the binary loads (ldd, with torch's lib on the path)
  local lib
  lib=$(ldd "$bin" 2>/dev/null | awk '$1 == "libstdc++.so.6" && $3 ~ /^\// {print $3; exit}')
  [ -n "$lib" ] || lib=$(ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 .*x86-64|libstdc\+\+\.so\.6 .*AArch64/ {print $NF; exit}')
  echo "$lib"
}
need_glibc=$(needed GLIBC)
need_glibcxx=$(needed GLIBCXX)
sys_glibc="${GANTRY_CHECK_SYSTEM_GLIBC:-$(system_glibc)}"
stdcxx_lib=$(system_libstdcxx)
if [ -n "${GANTRY_CHECK_SYSTEM_GLIBCXX:-}" ]; then
  sys_glibcxx="$GANTRY_CHECK_SYSTEM_GLIBCXX"; stdcxx_lib="GANTRY_CHECK_SYSTEM_GLIBCXX"
elif [ -n "$stdcxx_lib" ] && [ -r "$stdcxx_lib" ]; then
  sys_glibcxx=$(grep -aoE 'GLIBCXX_3\.4(\.[0-9]+)?' "$stdcxx_lib" | sed 's/^GLIBCXX_//' | sort -uV | tail -n 1)
else
  sys_glibcxx=""; stdcxx_lib="(no libstdc++.so.6 found)"
fi
echo "gpu-check: $bin needs glibc >= ${need_glibc:-?} and libstdc++ with GLIBCXX_${need_glibcxx:-?};" \
  "this system has glibc ${sys_glibc:-?} and libstdc++ up to GLIBCXX_${sys_glibcxx:-?} ($stdcxx_lib)"
missing=()
if [ -n "$need_glibc" ] && { [ -z "$sys_glibc" ] || ! ver_ge "$sys_glibc" "$need_glibc"; }; then
  missing+=("glibc ${need_glibc} (system: ${sys_glibc:-unknown})")
fi
if [ -n "$need_glibcxx" ] && { [ -z "$sys_glibcxx" ] || ! ver_ge "$sys_glibcxx" "$need_glibcxx"; }; then
  missing+=("libstdc++ GLIBCXX_${need_glibcxx} (system: ${sys_glibcxx:+GLIBCXX_}${sys_glibcxx:-none})")
fi
if [ "${#missing[@]}" -gt 0 ]; then
  line="${missing[0]}"; [ "${#missing[@]}" -gt 1 ] && line+=" and ${missing[1]}"
  echo "gpu-check: this system is too old for $bin: it needs $line; build the binary on a system no newer than this one" >&2
  exit 2
fi
# The PyTorch twins import numpy, which the torch wheel does not bring.
if ! "$py" -c 'import numpy' >/dev/null 2>&1; then
  echo "gpu-check: numpy is missing in $py (the PyTorch twins import it); trying $py -m pip install numpy" >&2
  "$py" -m pip install --quiet --disable-pip-version-check --retries 1 --timeout 20 numpy >&2 || true
  "$py" -c 'import numpy' >/dev/null 2>&1 || {
    echo "gpu-check: numpy is missing in $py and pip could not install it: install numpy into that python (e.g. from a wheel carried over) and rerun" >&2
    exit 2; }
fi
[ "$deps_only" = 1 ] && { echo "gpu-check: dependencies ok"; exit 0; }

if [ "$dry" = 1 ]; then
  device=cpu; steps=1; bench_steps=2
else
  device=cuda; steps=3; bench_steps=20
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=0
report=()
row() { report+=("| $1 | $2 | $3 |"); }
# --dry only: the resolution / width keys lowered where a preset does not fit this CPU (the
# header lists them and why); never the batch size, never a key the real run sets.
dry_shrink() { # PRESET
  [ "$dry" = 1 ] || return 0
  case "$1" in
    r3gan-cifar) echo "model.widths=[32] model.cardinality=[4] data.resolution=16" ;;
    stylegan2-256) echo "data.resolution=16 model.channel_base=1024 model.channel_max=64" ;;
    ugatit-256) echo "data.resolution=128 model.ch=16" ;;
    adaptivemix-wrn-cifar) echo "model.widen=1" ;;
  esac
}
toml_get() { # SECTION KEY < TOML: a value of the resolved configuration, quotes removed
  awk -v s="[$1]" -v k="$2" '/^\[/ {sec = $0} sec == s && $1 == k {v = $3; gsub(/"/, "", v); print v; exit}'
}

gpu="$("$py" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU")')"
echo "# gantry GPU check ($(date -u +%Y-%m-%d), $gpu, torch $("$py" -c 'import torch; print(torch.__version__)'), device $device)"
echo

# 1. Every preset, a few steps: GANs in fp32 and bf16, translation and classification in fp32.
for preset in $("$bin" presets | awk '{print $1}'); do
  # What kind of preset, and its resolved configuration (for its batch size).
  if cfg=$("$bin" classify train --config "$preset" --set data.spec=shapes --dry-run 2>/dev/null); then
    kind=classify
  elif cfg=$("$bin" train --config "$preset" --set data.a=shapes#0 --set data.b=shapes#1 --dry-run 2>/dev/null) \
       && grep -q '^task = "translate"' <<<"$cfg"; then
    kind=translate
  elif cfg=$("$bin" train --config "$preset" --dry-run 2>/dev/null) && [[ "$(toml_get data kind <<<"$cfg")" = gmm-* ]]; then
    kind=gmm
  elif cfg=$("$bin" train --config "$preset" --set data.kind=shapes --dry-run 2>&1); then
    kind=gan
  else
    failed=1
    row "train $preset" FAILED "$(echo "$cfg" | tail -n 1)"
    continue
  fi
  batch=$(toml_get train batch_size <<<"$cfg")
  [[ "$batch" =~ ^[0-9]+$ ]] || batch=0
  shrink=()
  for kv in $(dry_shrink "$preset"); do shrink+=(--set "$kv"); done
  quiet=(--set "train.device=$device" --set train.log_every=1)
  case "$kind" in
    gan|gmm)
      size=$(( batch > 256 ? batch : 256 ))
      cmd=(train --config "$preset" --set "train.steps=$steps" --set train.sample_every=0
           --set train.checkpoint_every=0 --set eval.every=0 --set "data.size=$size")
      [ "$kind" = gan ] && cmd+=(--set data.kind=shapes)
      precs=(fp32 bf16); what="$steps steps" ;;
    translate)
      cmd=(train --config "$preset" --set data.a=shapes#0 --set data.b=shapes#1 --set "train.steps=$steps"
           --set train.sample_every=0 --set train.checkpoint_every=0 --set eval.every=0)
      precs=(fp32); what="$steps steps" ;;
    classify)
      limit=$(( (steps + 1) * batch > 256 ? (steps + 1) * batch : 256 ))
      cmd=(classify train --config "$preset" --set data.spec=shapes --set "data.limit=$limit" --set train.epochs=1)
      precs=(fp32); what="1 epoch of $limit images" ;;
  esac
  for prec in "${precs[@]}"; do
    out="$work/$preset-$prec"
    pset=()
    [ "$kind" = gan ] || [ "$kind" = gmm ] && pset=(--set "train.precision=$prec")
    t0=$(date +%s.%N)
    if msg=$("$bin" "${cmd[@]}" ${shrink[@]+"${shrink[@]}"} "${quiet[@]}" ${pset[@]+"${pset[@]}"} --out "$out" 2>&1); then
      t=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
      loss=$(python3 - "$out/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
gan = [r for r in rows if "loss/d/adv" in r]
cls = [r for r in rows if "train/loss" in r]
if gan:
    print(f"D {gan[-1]['loss/d/adv']:.4f} G {gan[-1]['loss/g/adv']:.4f}")
elif cls:
    acc = [r["val/acc"] for r in rows if "val/acc" in r]
    print(f"loss {cls[-1]['train/loss']:.4f}" + (f" val acc {acc[-1]:.3f}" if acc else ""))
else:
    print("no losses logged")
PY
)
      note=""
      [ "${#shrink[@]}" -gt 0 ] && note="; --dry: $(dry_shrink "$preset")"
      [ "$kind" = translate ] || [ "$kind" = classify ] && note+="; fp32 only (no train.precision)"
      row "train $preset $prec" ok "batch $batch, $what, $t s with start-up; last $loss$note"
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

# 3. Step benchmarks against the PyTorch twins, same device, precision, memory format and TF32.
echo "## Training steps against PyTorch ($device, TF32 $tf32 on both sides unless a table says otherwise)"
echo
if ! bash "$here/bench.sh" "$(nproc)" "$bench_steps" "$device" 1; then failed=1; echo "bench.sh FAILED"; fi
echo
if ! bash "$here/bench_precision.sh" "$(nproc)" "$bench_steps" "$device" 1; then failed=1; echo "bench_precision.sh FAILED"; fi
echo
if [ "$dry" = 1 ]; then r3=(1 1 16 2 1); else r3=("$bench_steps" 1 64 4 1); fi
if ! bash "$here/bench_r3gan.sh" "$(nproc)" "${r3[@]}" "$device"; then failed=1; echo "bench_r3gan.sh FAILED"; fi
echo
# --dry: one timed step each, to check the scripts and the twins' options.
if [ "$dry" = 1 ]; then few=1; else few="$bench_steps"; fi
if ! bash "$here/bench_classify.sh" "$(nproc)" "$few" 1 "$device"; then failed=1; echo "bench_classify.sh FAILED"; fi
echo
if ! bash "$here/bench_ada.sh" "$(nproc)" "$few" 1 0.5 "$device"; then failed=1; echo "bench_ada.sh FAILED"; fi
echo
if ! bash "$here/bench_ugatit.sh" "$(nproc)" "$few" 1 "$device"; then failed=1; echo "bench_ugatit.sh FAILED"; fi
echo
[ "$failed" = 0 ] && echo "gpu-check: all checks passed" || echo "gpu-check: some checks FAILED"
exit "$failed"
