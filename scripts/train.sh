#!/usr/bin/env bash
# The main job: set everything up (first time only), then train. With no arguments this trains a
# DCGAN on the built-in shapes data set; any arguments go to `gantry train`
# (e.g. scripts/train.sh --config gmm-25 --set adaptivemix.enabled=true).
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
bash "$here/build.sh" --quiet
source "$here/env.sh"
exec "$GANTRY_ROOT/target/release/gantry" train "$@"
