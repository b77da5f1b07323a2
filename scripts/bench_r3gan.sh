#!/usr/bin/env bash
# R3GAN training step (issue 18): `gantry bench --config r3gan-small` (relativistic loss with R1
# and R2 on every D step, ResNeXt G and D) against its PyTorch twin (benches/r3gan_step.py, the
# networks of tests/pyref/r3gan_ref.py), same threads, batch, width and step structure, ROUNDS
# rounds alternating the two; prints a markdown table (medians over rounds of each side's median).
# WIDTH scales the model (the paper's CIFAR-10 width, 768, needs a GPU).
# Usage: scripts/bench_r3gan.sh [THREADS] [STEPS] [ROUNDS] [WIDTH] [CARDINALITY] [BLOCKS] [DEVICE]
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
[ "${GANTRY_NO_BUILD:-0}" = 1 ] || bash "$here/build.sh" --quiet
source "$here/env.sh"
cd "$GANTRY_ROOT"
threads="${1:-$(nproc)}"
steps="${2:-10}"
rounds="${3:-3}"
width="${4:-64}"
card="${5:-4}"
blocks="${6:-1}"
device="${7:-cpu}"
bin=target/release/gantry
py="${PYTHON:-$GANTRY_VENV/bin/python}"
g="" p=""
for _ in $(seq "$rounds"); do
  g+="$("$bin" bench --config r3gan-small --set "train.threads=$threads" --set "train.device=$device" --set "model.widths=[$width]" \
        --set "model.cardinality=[$card]" --set "model.blocks=[$blocks]" --steps "$steps" --warmup 2)"$'\n'
  p+="$("$py" benches/r3gan_step.py --threads "$threads" --device "$device" --width "$width" --cardinality "$card" \
        --blocks "$blocks" --steps "$steps" --warmup 2)"$'\n'
done
echo "| R3GAN step, batch 32, 32x32 | width | threads | gantry ms | PyTorch ms | ratio | gantry MiB | PyTorch MiB |"
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
