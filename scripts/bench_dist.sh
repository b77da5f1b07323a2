#!/usr/bin/env bash
# Data-parallel benchmark on one machine: the DCGAN step of scripts/bench.sh (32x32, global batch
# 64) as 1 process x 2 threads and as 2 processes x 1 thread (gloo), for gantry (`gantry bench
# --nproc`) and for its PyTorch twin (benches/gan_step.py; the 2-process run is
# torch.nn.parallel.DistributedDataParallel over gloo, started by torchrun), in the same run,
# alternating for ROUNDS rounds. Prints a markdown table: median step (rank 0's), the ratio
# gantry / PyTorch, and the MiB gantry all-reduces per step.
#
# Usage: scripts/bench_dist.sh [STEPS] [ROUNDS]
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
[ -x "$bin" ] || { echo "bench_dist.sh: $bin is missing (build it: scripts/build.sh)" >&2; exit 2; }
tf32="${GANTRY_BENCH_TF32:-off}"
case "$tf32" in off) gtf32=false ;; on) gtf32=true ;; *) echo "bench_dist.sh: GANTRY_BENCH_TF32 must be off or on, not $tf32" >&2; exit 2 ;; esac
steps="${1:-20}"
rounds="${2:-3}"
py="$GANTRY_VENV/bin/python"
torchrun="$GANTRY_VENV/bin/torchrun"
common=(--set data.kind=shapes --set data.size=256 --set train.batch_size=64 --set model.ngf=64 --set model.ndf=64
        --set train.log_every=0 --set train.sample_every=0 --set train.checkpoint_every=0
        --set "train.tf32=$gtf32" --steps "$steps" --warmup 5)
median() { python3 -c "import json,statistics,sys; r=[json.loads(l) for l in sys.argv[1].split('\n') if l.strip()]; print(statistics.median(x['$2'] for x in r))" "$1"; }
echo "| layout (TF32 $tf32) | gantry ms | PyTorch ms | ratio | gantry MiB all-reduced per step |"
echo "|---|---|---|---|---|"
for layout in "1x2" "2x1"; do
  nproc="${layout%x*}"; threads="${layout#*x}"
  g=""; p=""
  for _ in $(seq "$rounds"); do
    g+=$("$bin" bench --nproc "$nproc" "${common[@]}" --set "train.threads=$threads")$'\n'
    if [ "$nproc" = 1 ]; then
      p+=$("$py" benches/gan_step.py --threads "$threads" --steps "$steps" --warmup 5 --tf32 "$tf32")$'\n'
    else
      p+=$("$torchrun" --standalone --nproc-per-node "$nproc" benches/gan_step.py --ddp --threads "$threads" --steps "$steps" --warmup 5 --tf32 "$tf32" 2>/dev/null | tail -n 1)$'\n'
    fi
  done
  gm=$(median "$g" median_ms); pm=$(median "$p" median_ms); mib=$(median "$g" mib_reduced_per_step)
  python3 -c "print(f'| {$nproc} process(es) x {$threads} thread(s) | {$gm:.1f} | {$pm:.1f} | {$gm/$pm:.2f} | {$mib:.2f} |')"
done
