#!/usr/bin/env bash
# Classifier benchmarks (issue 14): ResNet-18, batch 128, 32x32, gantry (`gantry classify bench`)
# against its PyTorch twin (benches/classify_step.py) in the same run and thread count, rounds
# alternating: training step with cross-entropy, with AdaptiveMix (gantry 2 embed passes, the
# reference's 3), and PGD-10 throughput. Prints a markdown table.
# Usage: scripts/bench_classify.sh [THREADS] [STEPS] [ROUNDS] [DEVICE]
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
# GANTRY_BIN: the binary to time (default target/release/gantry, built first unless GANTRY_BIN is
# set or GANTRY_NO_BUILD=1: a machine without the toolchain, e.g. a GPU box that received the
# binary); PYTHON: the python with torch for the twins. TF32: gantry turns TF32 (and cuDNN's
# autotuner) off for every command and gantry classify bench has no key to turn it on, so the
# twin runs with TF32 off too and GANTRY_BENCH_TF32=on is ignored.
[ "${GANTRY_NO_BUILD:-0}" = 1 ] || [ -n "${GANTRY_BIN:-}" ] || bash "$here/build.sh" --quiet
source "$here/env.sh"
bin="${GANTRY_BIN:-$GANTRY_ROOT/target/release/gantry}"
[[ "$bin" = /* ]] || bin="$PWD/$bin"
cd "$GANTRY_ROOT"
[ -x "$bin" ] || { echo "bench_classify.sh: $bin is missing (build it: scripts/build.sh)" >&2; exit 2; }
tf32=off
[ "${GANTRY_BENCH_TF32:-off}" = off ] || echo "bench_classify.sh: GANTRY_BENCH_TF32=$GANTRY_BENCH_TF32 ignored: gantry classify bench has no TF32 key (off on both sides)" >&2
threads="${1:-$(nproc)}"
steps="${2:-5}"
rounds="${3:-2}"
device="${4:-cpu}"
py="${PYTHON:-$GANTRY_VENV/bin/python}"
echo "| ResNet-18, batch 128, TF32 off | threads | gantry ms | PyTorch ms | ratio | gantry img/s | PyTorch img/s |"
echo "|---|---|---|---|---|---|---|"
for what in ce adaptivemix pgd-10; do
  g="" p=""
  for _ in $(seq "$rounds"); do
    if [ "$what" = pgd-10 ]; then
      g+="$("$bin" classify bench --model resnet18 --attack pgd-10 --steps "$steps" --threads "$threads" --device "$device")"$'\n'
      p+="$("$py" benches/classify_step.py --attack pgd-10 --steps "$steps" --warmup 1 --threads "$threads" --device "$device" --tf32 "$tf32")"$'\n'
    else
      g+="$("$bin" classify bench --model resnet18 --mode "$what" --steps "$steps" --threads "$threads" --device "$device")"$'\n'
      p+="$("$py" benches/classify_step.py --mode "$what" --steps "$steps" --warmup 2 --threads "$threads" --device "$device" --tf32 "$tf32")"$'\n'
    fi
  done
  python3 - "$what" "$g" "$p" 128 <<'PY'
import json, statistics, sys
what, b = sys.argv[1], int(sys.argv[4])
g = [json.loads(l) for l in sys.argv[2].split("\n") if l.strip()]
p = [json.loads(l) for l in sys.argv[3].split("\n") if l.strip()]
gm = statistics.median(r["median_ms"] for r in g)
pm = statistics.median(r["median_ms"] for r in p)
print(f"| {what} | {g[0]['threads']} | {gm:.0f} | {pm:.0f} | {gm/pm:.2f} | {b/gm*1e3:.1f} | {b/pm*1e3:.1f} |")
PY
done
