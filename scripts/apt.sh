# Sourced by the scripts that install Debian packages: `apt_get ARGS...`
# runs apt-get as root, one at a time. Two test runs on one machine (a CI
# clone beside a checkout) install at once, and apt's own locks refuse
# the second instead of waiting: the project's lock file serializes our
# scripts, and DPkg::Lock::Timeout makes apt wait for anyone else (e.g.
# unattended-upgrades) rather than fail.

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_get() {
  as_root env DEBIAN_FRONTEND=noninteractive flock -w 900 /var/lock/hodei-apt.lock \
    apt-get -o DPkg::Lock::Timeout=600 "$@"
}
