#!/usr/bin/env bash
# Builds hodei (the front binary and hodei-host, which it runs for every
# command but `run`) and hodei-agent (release), puts them on PATH in
# ~/.cargo/bin, and starts a host with local agents on the embedded store
# (./hodei-data). Extra arguments go to `hodei serve`.
set -euo pipefail
cd "$(dirname "$0")/.."

# The in-tree policy plugins are built for wasm32-wasip2 by host/build.rs.
rustup target add wasm32-wasip2 >/dev/null

bin="${CARGO_HOME:-$HOME/.cargo}/bin"
built="${CARGO_TARGET_DIR:-target}/release"
cargo build --locked --release -p hodei -p hodei-cli -p hodei-agent
install -d "$bin"
install -m 0755 "$built/hodei" "$built/hodei-host" "$built/hodei-agent" "$bin/"
case ":$PATH:" in
  *":$bin:"*) ;;
  *) echo "note: add $bin to PATH to use \`hodei\` from other shells" >&2 ;;
esac
exec "$bin/hodei" serve --local-agents "${HODEI_LOCAL_AGENTS:-2}" "$@"
