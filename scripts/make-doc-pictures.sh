#!/usr/bin/env bash
# Regenerates the pictures of docs/training.md's "Sampling" section: trains a small StyleGAN2 on
# the built-in shapes (no files needed; about 15 minutes of one CPU thread), then draws them with
# `gantry sample`, the commands the section shows.
#
#   scripts/make-doc-pictures.sh [RUN_DIR]
#
# RUN_DIR defaults to runs/docs/sg2-shapes; a RUN_DIR that already holds a checkpoint is not trained
# again, only drawn from. GANTRY=path/to/gantry picks the binary (default: target/release/gantry).
# Writes docs/sample-seeds.png, docs/sample-interpolation.{gif,png} and
# docs/sample-style-mix-{coarse,fine}.png.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=env.sh
source "$root/scripts/env.sh"
gantry="${GANTRY:-$root/target/release/gantry}"
export OMP_NUM_THREADS=1
cd "$root"
run="${1:-runs/docs/sg2-shapes}"

if [ ! -d "$run/checkpoints" ]; then
  # stylegan2-32-small at a quarter of its widths (64, 64, 32, 16 channels at 4, 8, 16, 32).
  "$gantry" train --config stylegan2-32-small --out "$run" \
    --set model.channel_base=512 --set model.channel_max=64 \
    --set train.steps=3000 --set train.threads=1
fi

# Seeds 0-15 (stylegan2-ada's latents), truncated towards the average w.
"$gantry" sample --checkpoint "$run" --seeds 0-15 --trunc 0.7 --out docs/sample-seeds.png --force
# A walk in w through seeds 0, 1, 2, 3 and back to 0, 16 frames per pair (spherical) ...
"$gantry" sample --checkpoint "$run" --seeds 0,1,2,3,0 --interpolate 16 --trunc 0.7 \
  --out docs/sample-interpolation.gif --force
# ... and between two seeds as one row.
"$gantry" sample --checkpoint "$run" --seeds 0,1 --interpolate 10 --trunc 0.7 \
  --out docs/sample-interpolation.png --force
# Style mixing: rows are seeds 0-4, columns seeds 10-15; each cell is its row's w with the column
# seed's coarse styles (ws 0-3, the 4x4 and 8x8 layers) ...
"$gantry" sample --checkpoint "$run" --seeds 0-4 --style-mix 10-15 --style-layers 0-3 \
  --trunc 0.7 --out docs/sample-style-mix-coarse.png --force
# ... or its fine styles (ws 4-7, the 16x16 and 32x32 layers).
"$gantry" sample --checkpoint "$run" --seeds 0-4 --style-mix 10-15 --style-layers 4-7 \
  --trunc 0.7 --out docs/sample-style-mix-fine.png --force
ls -l docs/sample-*
