#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine (apt as root, a venv with pip) and run them.
# This is the README's test command; .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  need=""
  for pkg in slurm-wlm munge chromium chromium-driver; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
  done
  if [ -n "$need" ]; then
    echo "apt-get install:$need"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build
python -m pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
python -m pip install -q -e ".[test,baselines]" 2>&1 | grep -v "^WARNING: Location" || true

python -m pytest -q -p no:cacheprovider --timeout=900 tests "$@"
