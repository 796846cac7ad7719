#!/usr/bin/env bash
# promtool, Prometheus' own checker, for host/tests/metrics.rs
# (`promtool check metrics` on a real scrape), from Debian's `prometheus`
# package. Installs it when missing; the package's server is not started.
# Idempotent. Does not fail when the install fails: the check then skips
# with a reason, except under CI=true, where it fails.
set -uo pipefail

# shellcheck source=scripts/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

if ! command -v promtool >/dev/null; then
  echo "installing promtool (Debian's prometheus package)" >&2
  apt_get update -qq >&2 &&
    apt_get install -y -qq --no-install-recommends prometheus >&2 ||
    echo "prometheus could not be installed; the promtool check will skip (fail under CI=true)" >&2
  # A package install may start the server; the tests need only the tool.
  as_root systemctl stop prometheus >/dev/null 2>&1 || true
  as_root pkill -x prometheus >/dev/null 2>&1 || true
fi
