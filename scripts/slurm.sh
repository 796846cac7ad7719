#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for `hodei bench latency`
# to compare `hodei run` with `srun` side by side.
#
# Installs slurm-wlm (slurmctld + slurmd + the client commands) and munge
# from Debian's packages when missing, writes /etc/slurm/slurm.conf for one
# node (this host, at 127.0.0.1, all its CPUs, one partition), starts
# munged, slurmctld and slurmd when they are not running, and waits until
# the node takes jobs. Idempotent: run it as often as you like.
#
#   scripts/slurm.sh && srun true
#
# No systemd is assumed: the daemons are started directly (this works in
# a container). Process tracking is by /proc (proctrack/linuxproc), so no
# cgroup setup is needed.
set -euo pipefail

# shellcheck source=scripts/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v srun >/dev/null; then
  echo "installing Slurm from Debian's packages" >&2
  apt_get update -qq >&2
  apt_get install -y -qq slurm-wlm munge >&2
fi

NODE=$(hostname -s)
CPUS=$(nproc)
MEMORY_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
CONF=/etc/slurm/slurm.conf
WANTED=$(cat <<EOF
# Written by hodei scripts/slurm.sh: one node, this host.
ClusterName=hodei-bench
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEMORY_MB} State=UNKNOWN
PartitionName=local Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF
)
as_root mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
CHANGED=0
if [ "$(cat "$CONF" 2>/dev/null)" != "$WANTED" ]; then
  printf '%s\n' "$WANTED" | as_root tee "$CONF" >/dev/null
  CHANGED=1
fi

running() { pgrep -x "$1" >/dev/null; }

if [ ! -s /etc/munge/munge.key ]; then
  as_root mkdir -p /etc/munge
  as_root dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  as_root chown munge:munge /etc/munge/munge.key
  as_root chmod 0400 /etc/munge/munge.key
fi
if ! running munged; then
  as_root mkdir -p /run/munge /var/log/munge /var/lib/munge
  as_root chown munge:munge /run/munge /var/log/munge /var/lib/munge
  as_root runuser -u munge -- /usr/sbin/munged
fi

if [ "$CHANGED" = 1 ]; then
  # A new configuration: restart what runs with the old one.
  for daemon in slurmd slurmctld; do
    if [ -s "/run/$daemon.pid" ]; then as_root kill "$(cat "/run/$daemon.pid")" 2>/dev/null || true; fi
  done
  for _ in $(seq 50); do
    running slurmd || running slurmctld || break
    sleep 0.1
  done
fi
if ! running slurmctld; then as_root slurmctld; fi
if ! running slurmd; then as_root slurmd; fi

for _ in $(seq 100); do
  STATE=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  case "$STATE" in
    idle*|mixed*|allocated*|completing*) echo "slurm: node $NODE is $STATE" >&2; exit 0 ;;
    down*|drain*) as_root scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 0.2
done
echo "slurm: node $NODE did not come up; see /var/log/slurm/" >&2
exit 1
