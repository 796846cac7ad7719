#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the dashboard's browser tests
# (host/tests/dashboard.rs), from Debian's packages.
#
# Installs `chromium` and `chromium-driver` when chromedriver is missing.
# Idempotent. Does not fail when the install fails: the tests then skip
# with a reason, except under CI=true, where they fail.
set -uo pipefail

# shellcheck source=scripts/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
  echo "installing chromium and chromium-driver from Debian's packages" >&2
  apt_get update -qq >&2 &&
    apt_get install -y -qq chromium chromium-driver >&2 ||
    echo "chromium could not be installed; the dashboard browser tests will skip (fail under CI=true)" >&2
fi
