#!/usr/bin/env bash
# Stop the one-node SLURM cluster started by scripts/slurm_up.sh: cancels its jobs, stops
# slurmd, slurmctld, slurmdbd, MariaDB, and munged when slurm_up.sh started it.
# Idempotent; never fails when nothing is running. The state folder is kept (logs, spool).
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/slurm_env.sh
. "$HERE/slurm_env.sh"

if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    exec sudo -n env PATH="$PATH" SPARSEBENCH_SLURM_STATE="$SB_SLURM_STATE" bash "$HERE/slurm_down.sh" "$@"
  fi
  echo "slurm_down: not root and no passwordless sudo: nothing stopped" >&2
  exit 0
fi

R="$SB_SLURM_RUN"
stopped=""
for d in slurmd slurmctld slurmdbd; do
  if sb_pid_alive "$R/$d.pid" >/dev/null; then stopped="$stopped $d"; fi
done
if sb_pid_alive "$SB_SLURM_DBRUN/mariadb.pid" >/dev/null; then stopped="$stopped mariadb"; fi
if [ -f "$SB_SLURM_CONF" ] && grep -qF "$SB_SLURM_MARK" "$SB_SLURM_CONF" &&
   sb_pid_alive "$R/slurmctld.pid" >/dev/null; then
  # Cancel what is still queued or running so that no job processes outlive the cluster.
  jobs="$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')"
  if [ -n "${jobs// /}" ]; then
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs >/dev/null 2>&1
    for _ in $(seq 30); do
      [ -z "$(timeout 10 squeue -h -o %A 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  timeout 15 scontrol shutdown >/dev/null 2>&1
  for _ in $(seq 50); do
    sb_pid_alive "$R/slurmctld.pid" >/dev/null || sb_pid_alive "$R/slurmd.pid" >/dev/null || break
    sleep 0.2
  done
fi

for d in slurmd slurmctld slurmdbd; do
  sb_stop_pidfile "$R/$d.pid" 10
done
sb_stop_pidfile "$SB_SLURM_DBRUN/mariadb.pid" 30
if [ -f "$R/munged.started-by-us" ]; then
  if sb_pid_alive "$R/munged.pid" >/dev/null; then stopped="$stopped munged"; fi
  sb_stop_pidfile "$R/munged.pid" 10
  rm -f "$R/munged.started-by-us"
fi
echo "slurm_down: stopped${stopped:- nothing (was not running)}"
exit 0
