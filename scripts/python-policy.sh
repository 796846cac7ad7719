#!/usr/bin/env bash
# Builds examples/python-policy/app.py into a scheduling-policy component
# with componentize-py (installed from PyPI into a private virtualenv on
# first use). Usage: scripts/python-policy.sh [OUT.wasm]
# (default: target/python-policy/policy.wasm). Load it with
# `hodei policy load OUT.wasm --name python-tier`.
set -euo pipefail
cd "$(dirname "$0")/.."
COMPONENTIZE_PY_VERSION=0.25.1
work="${CARGO_TARGET_DIR:-target}/python-policy"
out="${1:-$work/policy.wasm}"
mkdir -p "$work" "$(dirname "$out")"
if [ ! -x "$work/venv/bin/componentize-py" ]; then
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install --quiet "componentize-py==$COMPONENTIZE_PY_VERSION"
fi
"$work/venv/bin/componentize-py" -d wit/scheduler.wit -w scheduling-policy \
    componentize -p examples/python-policy app -o "$out"
echo "$out"
