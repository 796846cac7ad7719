#!/usr/bin/env bash
# The whole test suite, on a fresh machine of this project's kind.
# Installs what the tests need, builds the binaries the black-box tests
# start (hodei, hodei-agent), then runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

# The PostgreSQL adapter's tests need a real server: install (from Debian's
# packages) and start it when missing, and point the tests at it.
eval "$(./scripts/postgres.sh)"

# The dashboard's browser tests drive headless Chromium: install Debian's
# chromium and chromium-driver when missing.
./scripts/chromium.sh

# /metrics is checked with Prometheus' promtool: install Debian's
# prometheus package (for the tool) when missing.
./scripts/promtool.sh

# The in-tree policy plugins are built for wasm32-wasip2 by host/build.rs.
rustup target add wasm32-wasip2 >/dev/null

# The black-box tests in host/tests start real hodei (the front binary,
# which runs hodei-host) and hodei-agent processes from the target dir;
# cargo builds `hodei-host` for them by itself, the other two live in
# other packages, so build all three up front.
cargo build --locked -p hodei -p hodei-cli -p hodei-agent
cargo test --locked --workspace "$@"

# The API's contract: schemathesis against a real host (see the script).
./scripts/schemathesis.sh
