#!/usr/bin/env bash
# Builds the worker image `hodei-worker:<version>` FROM scratch, through the
# Docker engine's build API (no registry involved):
#   /hodei-agent   the static musl agent (x86_64-unknown-linux-musl)
#   /bin/bash      from Debian's bash-static (job scripts run as `bash job.sh`)
#   /bin/busybox   from Debian's busybox-static, one symlink per applet
#   /tmp           1777, the agent's work dir
# The Docker provider runs `/hodei-agent` in it with host networking.
#
# Environment: HODEI_WORKER_IMAGE (tag, default hodei-worker:<version>),
# HODEI_AGENT_PROFILE (cargo profile of the agent, default agent-release;
# tests use dev, which builds faster), CARGO_TARGET_DIR.
# Prints the tag on its last line.
set -euo pipefail
# shellcheck source=scripts/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
tag=${HODEI_WORKER_IMAGE:-hodei-worker:$version}
profile=${HODEI_AGENT_PROFILE:-agent-release}
target=x86_64-unknown-linux-musl
target_dir=${CARGO_TARGET_DIR:-target}
profile_dir=$profile
[ "$profile" = dev ] && profile_dir=debug

rustup target add "$target" >&2
# The agent speaks TLS with rustls on ring, whose C and assembly parts
# need a C compiler for musl: Debian's musl-tools (musl-gcc).
if ! command -v musl-gcc >/dev/null; then
    (apt_get install -y musl-tools >&2 || { apt_get update >&2 && apt_get install -y musl-tools >&2; })
fi
export CC_x86_64_unknown_linux_musl=musl-gcc
cargo build --profile "$profile" --target "$target" -p hodei-agent >&2
agent="$target_dir/$target/$profile_dir/hodei-agent"

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/rootfs/bin" "$context/rootfs/tmp" "$context/debs"
chmod 1777 "$context/rootfs/tmp"
(
    cd "$context/debs"
    apt-get download busybox-static bash-static >&2 || {
        apt_get update >&2
        apt-get download busybox-static bash-static >&2
    }
)
for deb in "$context"/debs/*.deb; do
    dpkg-deb -x "$deb" "$context/extracted"
done
cp "$context/extracted/bin/busybox" "$context/rootfs/bin/busybox"
cp "$context/extracted/bin/bash-static" "$context/rootfs/bin/bash"
for applet in $("$context/rootfs/bin/busybox" --list); do
    [ -e "$context/rootfs/bin/$applet" ] || ln -s busybox "$context/rootfs/bin/$applet"
done
cp "$agent" "$context/rootfs/hodei-agent"

cat > "$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENV PATH=/bin
DOCKERFILE
docker build --quiet --label "hodei.image=worker" --tag "$tag" "$context" >&2
echo "$tag"
