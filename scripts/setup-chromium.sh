#!/usr/bin/env bash
# Headless Chromium for the report's browser test (crates/gantry/tests/report_browser.rs), from
# Debian's packages: does nothing when a Chromium is already on PATH (or GANTRY_CHROMIUM names
# one), else installs `chromium-headless-shell` (and a font) with apt-get, as root or through
# `sudo -n`. Prints one line saying what it found or why it cannot, and exits non-zero then.
set -uo pipefail

for bin in "${GANTRY_CHROMIUM:-}" chromium-headless-shell chromium chromium-browser google-chrome; do
  if [ -n "$bin" ] && command -v "$bin" >/dev/null 2>&1; then
    echo "setup-chromium: using $(command -v "$bin")"
    exit 0
  fi
done

if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-chromium: no Chromium on PATH and no apt-get to install one: install chromium (or set GANTRY_CHROMIUM) for the report browser test" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "setup-chromium: no Chromium on PATH and no root or passwordless sudo to run 'apt-get install chromium-headless-shell'" >&2
  exit 1
fi

packages=(chromium-headless-shell fonts-dejavu-core)
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# The package lists of a fresh machine (a CI image) may be empty or stale.
if ! ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}" >"$log" 2>&1; then
  if ! { ${as_root[@]+"${as_root[@]}"} apt-get update -q >>"$log" 2>&1 &&
    ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}" >>"$log" 2>&1; }; then
    echo "setup-chromium: 'apt-get install ${packages[*]}' failed: $(grep -E '^E:' "$log" | tail -n 1)" >&2
    exit 1
  fi
fi
if ! command -v chromium-headless-shell >/dev/null 2>&1; then
  echo "setup-chromium: chromium-headless-shell installed but not on PATH" >&2
  exit 1
fi
echo "setup-chromium: installed $(chromium-headless-shell --version 2>/dev/null | head -n 1)"
