#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine (apt as root, a venv with pip) and run them.
# This is the README's test command; .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  need=""
  for pkg in slurm-wlm munge chromium chromium-driver libjs-jquery; do
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
python -m pip install -q -e ".[test,baselines,xas]" 2>&1 | grep -v "^WARNING: Location" || true

# The real-MongoDB tier (tests marked `mongodb`): FerretDB, a MongoDB-wire-protocol server written in Go,
# built once into ~/.cache/aso-workflows (aso_workflows/testing/ferretdb.py), started on 127.0.0.1 with its
# data in a temporary folder and stopped (by PID) when this script ends. mongosh (npm) for the shell queries.
cache="${ASO_CACHE_DIR:-$HOME/.cache/aso-workflows}"
if [ -n "${ASO_TEST_MONGODB_URI:-}" ]; then
  echo "MongoDB tier: using the server in ASO_TEST_MONGODB_URI"
elif why_not="$(python -c 'from aso_workflows.testing.ferretdb import unavailable_reason as r; print(r() or "")')" \
     && [ -z "$why_not" ]; then
  ferret_dir="$(mktemp -d "${TMPDIR:-/tmp}/aso-ferretdb.XXXXXX")"
  trap 'python -m aso_workflows.testing.ferretdb stop --dir "$ferret_dir" || true; rm -rf "$ferret_dir"' EXIT
  eval "$(python -m aso_workflows.testing.ferretdb start --dir "$ferret_dir")"
  export ASO_TEST_MONGODB_URI
  echo "MongoDB tier: FerretDB on ${ASO_TEST_MONGODB_URI##*@} (data in $ferret_dir)"
else
  echo "MongoDB tier skipped: ${why_not:-the FerretDB test server cannot be built here}"
fi
mongosh_dir="$cache/mongosh-2.12.0"
if [ -x "$mongosh_dir/node_modules/.bin/mongosh" ]; then
  export ASO_MONGOSH="$mongosh_dir/node_modules/.bin/mongosh"
elif command -v npm >/dev/null 2>&1; then
  if npm install --prefix "$mongosh_dir" --no-audit --no-fund --loglevel=error mongosh@2.12.0 >/dev/null; then
    export ASO_MONGOSH="$mongosh_dir/node_modules/.bin/mongosh"
  else
    echo "mongosh could not be installed from npm: the shell-query tests are skipped"
  fi
else
  echo "mongosh skipped: npm is not installed (the shell-query tests are skipped)"
fi

python -m pytest -q -p no:cacheprovider --timeout=900 --durations=40 tests "$@"
