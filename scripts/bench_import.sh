#!/usr/bin/env bash
# Importing a realistic stylegan2-ada-pytorch network pickle and drawing one sample, as whole
# processes: `gantry sample --checkpoint PKL --n 1 --out PNG --device cpu` against its PyTorch twin
# (benches/import_pickle.py load: the official legacy.load_network_pkl(f)['G_ema'], one z,
# G(z, c, noise_mode='const', force_fp32=True), a PNG). The pickle is the official code's
# `--cfg=paper256` snapshot (G, D, G_ema, AugmentPipe bgc; about 296 MB), made once with
# `benches/import_pickle.py make` (about 5 s, 1.5 GB) and kept outside the repo.
# Each side runs once untimed (page cache, lazy libraries), then ROUNDS rounds alternating the two,
# each run under /usr/bin/time -v: wall time and peak RSS (maximum resident set size). Prints a
# markdown table: medians (min - max) of each, and the ratios gantry / PyTorch of the medians.
# Usage: scripts/bench_import.sh [ROUNDS] [THREADS]
# Environment: INTEROP_SRC (folder with NVlabs+stylegan2-ada-pytorch/, default /work/interop-src),
# BENCH_IMPORT_DIR (where the pickle lives, default /tmp/bench-import), GANTRY_BIN, GANTRY_NO_BUILD,
# PYTHON as the other bench scripts.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
[ "${GANTRY_NO_BUILD:-0}" = 1 ] || [ -n "${GANTRY_BIN:-}" ] || bash "$here/build.sh" --quiet
source "$here/env.sh"
bin="${GANTRY_BIN:-$GANTRY_ROOT/target/release/gantry}"
[[ "$bin" = /* ]] || bin="$PWD/$bin"
cd "$GANTRY_ROOT"
[ -x "$bin" ] || { echo "bench_import.sh: $bin is missing (build it: scripts/build.sh)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "bench_import.sh: needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 2; }
rounds="${1:-3}"
threads="${2:-2}"
src="${INTEROP_SRC:-/work/interop-src}"
dir="${BENCH_IMPORT_DIR:-/tmp/bench-import}"
py="${PYTHON:-$GANTRY_VENV/bin/python}"
pkl="$dir/network-snapshot-paper256.pkl"
if [ ! -f "$pkl" ]; then
  echo "bench_import.sh: making $pkl with the official code in $src" >&2
  "$py" benches/import_pickle.py make --src "$src" --out "$dir" --res 256 >&2
fi
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
export OMP_NUM_THREADS="$threads"
gantry_cmd=("$bin" sample --checkpoint "$pkl" --n 1 --out "$logs/gantry.png" --force --device cpu)
torch_cmd=("$py" benches/import_pickle.py load "$pkl" --src "$src" --out "$logs/pytorch.png")
# One timed run: appends "wall_s peak_kib" to $logs/$1.
timed() {
  local side="$1"; shift
  /usr/bin/time -v -o "$logs/time.txt" "$@" >"$logs/out.txt" 2>&1 || { cat "$logs/out.txt" >&2; exit 1; }
  python3 - "$logs/time.txt" >>"$logs/$side" <<'PY'
import sys
t = dict(l.strip().rsplit(": ", 1) for l in open(sys.argv[1]) if ": " in l)
w = t["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":")
print(sum(float(x) * 60 ** i for i, x in enumerate(reversed(w))), t["Maximum resident set size (kbytes)"])
PY
}
timed warm "${gantry_cmd[@]}"
timed warm "${torch_cmd[@]}"
for _ in $(seq "$rounds"); do
  timed gantry "${gantry_cmd[@]}"
  timed pytorch "${torch_cmd[@]}"
done
python3 - "$logs" "$pkl" "$threads" "$rounds" <<'PY'
import os, statistics, sys
logs, pkl, threads, rounds = sys.argv[1:]
size = os.path.getsize(pkl)
rows = {s: [tuple(map(float, l.split())) for l in open(os.path.join(logs, s))] for s in ("gantry", "pytorch")}
def fig(side, i, scale):
    v = [r[i] * scale for r in rows[side]]
    return statistics.median(v), min(v), max(v)
print(f"pickle: {pkl}, {size / 1e6:.1f} MB; threads {threads}; {rounds} rounds; median (min - max)")
print()
print("| paper256 snapshot, load + 1 sample, CPU | gantry | PyTorch | gantry / PyTorch |")
print("|---|---|---|---|")
for name, i, scale, unit, f in (("wall s", 0, 1, "", "{:.2f}"), ("peak RSS MiB", 1, 1 / 1024, "", "{:.0f}")):
    g, p = fig("gantry", i, scale), fig("pytorch", i, scale)
    cell = lambda m: f"{f.format(m[0])} ({f.format(m[1])} - {f.format(m[2])})"
    print(f"| {name} | {cell(g)} | {cell(p)} | {g[0] / p[0]:.2f} |")
g, p = fig("gantry", 1, 1024), fig("pytorch", 1, 1024)
print(f"| peak RSS / pickle size | {g[0] / size:.1f} | {p[0] / size:.1f} | |")
PY
