#!/usr/bin/env bash
# Start a real one-node SLURM cluster on localhost (Debian's slurmctld/slurmd/munge, plus
# slurmdbd + MariaDB for `sacct` unless SPARSEBENCH_SLURM_ACCOUNTING=0).
# Idempotent: exits 0 at once when `sinfo` already shows the node usable.
# Exit codes: 0 up; 3 SLURM unavailable here (no root/sudo, no apt, install failed); 1 failed to start.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/slurm_env.sh
. "$HERE/slurm_env.sh"

say() { echo "slurm_up: $*"; }
unavailable() { echo "slurm_up: SLURM unavailable here: $*" >&2; exit 3; }

if sb_slurm_is_up; then
  say "already up: $(sinfo -h -o '%P %D %T' 2>/dev/null | tr '\n' ' ')"
  exit 0
fi

# ---- root (or passwordless sudo: re-run the whole script under it) ---------------------------
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    exec sudo -n env PATH="$PATH" SPARSEBENCH_SLURM_STATE="$SB_SLURM_STATE" \
      SPARSEBENCH_SLURM_ACCOUNTING="$SB_SLURM_ACCOUNTING" bash "$HERE/slurm_up.sh" "$@"
  fi
  unavailable "needs root or passwordless sudo (running as $(id -un))"
fi

mkdir -p "$SB_SLURM_LOG" "$SB_SLURM_RUN" "$SB_SLURM_STATE/spool/ctld" "$SB_SLURM_STATE/spool/slurmd" ||
  unavailable "cannot create state folder $SB_SLURM_STATE"
chmod 755 "$SB_SLURM_STATE" "$SB_SLURM_LOG" "$SB_SLURM_RUN"

# ---- packages ---------------------------------------------------------------------------------
APT_LOG="$SB_SLURM_LOG/apt.log"
apt_install() {
  local opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300)
  DEBIAN_FRONTEND=noninteractive apt-get install "${opts[@]}" "$@" >>"$APT_LOG" 2>&1 && return 0
  DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$APT_LOG" 2>&1 &&
    DEBIAN_FRONTEND=noninteractive apt-get install "${opts[@]}" "$@" >>"$APT_LOG" 2>&1
}
missing_cmd() {
  local c
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || return 0; done
  return 1
}

if missing_cmd sbatch sinfo scontrol slurmctld slurmd munged munge; then
  command -v apt-get >/dev/null 2>&1 || unavailable "slurm/munge are not installed and apt-get is missing"
  say "installing slurmctld slurmd slurm-client munge with apt-get (log: $APT_LOG)"
  apt_install slurmctld slurmd slurm-client munge ||
    { tail -n 20 "$APT_LOG" >&2; unavailable "apt-get install slurmctld slurmd slurm-client munge failed"; }
  missing_cmd sbatch slurmctld slurmd munged && unavailable "packages installed but binaries are missing"
fi

if [ "$SB_SLURM_ACCOUNTING" = 1 ] && missing_cmd slurmdbd sacct sacctmgr mariadbd mariadb-install-db mariadb; then
  if command -v apt-get >/dev/null 2>&1; then
    say "installing slurmdbd mariadb-server for sacct (log: $APT_LOG)"
    apt_install slurmdbd mariadb-server mariadb-client || true
  fi
  if missing_cmd slurmdbd sacct sacctmgr mariadbd mariadb-install-db mariadb; then
    say "warning: slurmdbd/MariaDB unavailable, running WITHOUT accounting (sacct will not work)" >&2
    SB_SLURM_ACCOUNTING=0
  fi
fi

# Stale daemons of ours that do not make a working cluster: restart from scratch.
sb_stop_pidfile "$SB_SLURM_RUN/slurmd.pid" 10
sb_stop_pidfile "$SB_SLURM_RUN/slurmctld.pid" 10

# ---- munge ------------------------------------------------------------------------------------
munge_ok() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_ok; then
  id munge >/dev/null 2>&1 || unavailable "user 'munge' does not exist (broken munge package?)"
  install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
  install -d -o munge -g munge -m 0755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null 2>&1; then mungekey -c -f -k /etc/munge/munge.key
    else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
  fi
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  if ! pgrep -u munge -x munged >/dev/null 2>&1; then
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    if command -v runuser >/dev/null 2>&1; then
      setsid runuser -u munge -- munged --force </dev/null >>"$SB_SLURM_LOG/munged.out" 2>&1
    else
      setsid su -s /bin/sh munge -c 'munged --force' </dev/null >>"$SB_SLURM_LOG/munged.out" 2>&1
    fi
    for _ in $(seq 50); do munge_ok && break; sleep 0.2; done
    if munge_ok; then
      cp /run/munge/munged.pid "$SB_SLURM_RUN/munged.pid" 2>/dev/null ||
        pgrep -u munge -x munged | head -n1 >"$SB_SLURM_RUN/munged.pid"
      touch "$SB_SLURM_RUN/munged.started-by-us"
    fi
  fi
  if ! munge_ok; then
    cat "$SB_SLURM_LOG/munged.out" /var/log/munge/munged.log 2>/dev/null | tail -n 20 >&2
    echo "slurm_up: munged did not start" >&2
    exit 1
  fi
fi

# ---- configuration ----------------------------------------------------------------------------
NODE="$SB_SLURM_NODE"
CPUS="$(nproc)"
MEM_MB=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
REAL_MEM=$(( MEM_MB * 95 / 100 ))
[ "$REAL_MEM" -ge 1 ] || REAL_MEM=1

mkdir -p "$SB_SLURM_ETC"
backup_foreign() {
  if [ -f "$1" ] && ! grep -qF "$SB_SLURM_MARK" "$1"; then
    cp -p "$1" "$1.bak-sparsebench-$(date +%Y%m%d%H%M%S)"
    say "backed up existing $1"
  fi
}
backup_foreign "$SB_SLURM_CONF"

ACCT_CONF="AccountingStorageType=accounting_storage/none"
if [ "$SB_SLURM_ACCOUNTING" = 1 ]; then
  ACCT_CONF="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
fi

cat >"$SB_SLURM_CONF.tmp" <<EOF
$SB_SLURM_MARK (state: $SB_SLURM_STATE)
ClusterName=$SB_SLURM_CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s).
AuthInfo=cred_expire=30
CredType=cred/munge
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true

StateSaveLocation=$SB_SLURM_STATE/spool/ctld
SlurmdSpoolDir=$SB_SLURM_STATE/spool/slurmd
SlurmctldPidFile=$SB_SLURM_RUN/slurmctld.pid
SlurmdPidFile=$SB_SLURM_RUN/slurmd.pid
SlurmctldLogFile=$SB_SLURM_LOG/slurmctld.log
SlurmdLogFile=$SB_SLURM_LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups: plain /proc process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# Pending jobs whose begin time passed (e.g. requeued ones) start within ~5 s, not 30-60 s.
SchedulerParameters=bf_interval=5,sched_interval=10

ReturnToService=2
JobRequeue=1
MinJobAge=60
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
InactiveLimit=0
KillWait=5
OverTimeLimit=0
UnkillableStepTimeout=30

$ACCT_CONF

NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
mv -f "$SB_SLURM_CONF.tmp" "$SB_SLURM_CONF"
chmod 644 "$SB_SLURM_CONF"

show_logs() {
  local f
  for f in "$@"; do
    [ -f "$f" ] || continue
    echo "----- tail $f" >&2
    tail -n 30 "$f" >&2
  done
}

# ---- accounting: MariaDB (own datadir, 127.0.0.1:6820) + slurmdbd ----------------------------
start_accounting() {
  local sock="$SB_SLURM_DBRUN/mysqld.sock" dbd_ok=0
  local sql=(mariadb --no-defaults -S "$sock" -u root)
  if ! sb_pid_alive "$SB_SLURM_DBRUN/mariadb.pid" >/dev/null; then
    id mysql >/dev/null 2>&1 || return 1
    install -d -o mysql -g mysql -m 0755 "$SB_SLURM_DBRUN"
    if [ ! -d "$SB_SLURM_DB/mysql" ]; then
      rm -rf "$SB_SLURM_DB"
      install -d -o mysql -g mysql -m 0700 "$SB_SLURM_DB"
      mariadb-install-db --no-defaults --user=mysql --datadir="$SB_SLURM_DB" --skip-test-db \
        --auth-root-authentication-method=socket >"$SB_SLURM_LOG/mariadb-install.log" 2>&1 || return 1
    fi
    chown -R mysql:mysql "$SB_SLURM_DB"
    rm -f "$sock"
    setsid mariadbd --no-defaults --user=mysql --datadir="$SB_SLURM_DB" --socket="$sock" \
      --port=6820 --bind-address=127.0.0.1 --pid-file="$SB_SLURM_DBRUN/mariadb.pid" \
      --log-error="$SB_SLURM_DBRUN/mariadb.log" --skip-log-bin --innodb-buffer-pool-size=64M \
      --innodb-lock-wait-timeout=900 --max-allowed-packet=16M </dev/null >/dev/null 2>&1 &
    for _ in $(seq 150); do "${sql[@]}" -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  "${sql[@]}" >>"$SB_SLURM_LOG/mariadb-install.log" 2>&1 <<'SQL' || return 1
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'sparsebench';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'sparsebench';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
  backup_foreign "$SB_SLURM_DBD_CONF"
  cat >"$SB_SLURM_DBD_CONF" <<EOF
$SB_SLURM_MARK (state: $SB_SLURM_STATE)
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$SB_SLURM_RUN/slurmdbd.pid
LogFile=$SB_SLURM_LOG/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=6820
StorageUser=slurm
StoragePass=sparsebench
StorageLoc=slurm_acct_db
EOF
  chown root:root "$SB_SLURM_DBD_CONF" && chmod 600 "$SB_SLURM_DBD_CONF"
  if ! sb_pid_alive "$SB_SLURM_RUN/slurmdbd.pid" >/dev/null; then
    setsid slurmdbd </dev/null >>"$SB_SLURM_LOG/slurmdbd.out" 2>&1
  fi
  for _ in $(seq 100); do
    if timeout 10 sacctmgr -n -P list cluster >/dev/null 2>&1; then dbd_ok=1; break; fi
    sleep 0.3
  done
  [ "$dbd_ok" = 1 ] || return 1
  if [ -z "$(timeout 10 sacctmgr -n -P list cluster "$SB_SLURM_CLUSTER" format=cluster 2>/dev/null)" ]; then
    timeout 20 sacctmgr -i add cluster "$SB_SLURM_CLUSTER" >>"$SB_SLURM_LOG/sacctmgr.log" 2>&1 || return 1
  fi
  return 0
}

if [ "$SB_SLURM_ACCOUNTING" = 1 ]; then
  if ! start_accounting; then
    show_logs "$SB_SLURM_LOG/mariadb-install.log" "$SB_SLURM_DBRUN/mariadb.log" "$SB_SLURM_LOG/slurmdbd.log"
    say "warning: accounting (slurmdbd/MariaDB) failed to start; running WITHOUT it (sacct will not work)" >&2
    sb_stop_pidfile "$SB_SLURM_RUN/slurmdbd.pid" 10
    sed -i -e '/^AccountingStorage/d' -e '/^JobAcctGather/d' "$SB_SLURM_CONF"
    echo "AccountingStorageType=accounting_storage/none" >>"$SB_SLURM_CONF"
    SB_SLURM_ACCOUNTING=0
  fi
fi

# ---- slurmctld + slurmd (they daemonize themselves; setsid detaches them from this shell) -----
say "starting slurmctld and slurmd (node $NODE: CPUs=$CPUS RealMemory=$REAL_MEM MB; state $SB_SLURM_STATE)"
setsid slurmctld -i -f "$SB_SLURM_CONF" </dev/null >>"$SB_SLURM_LOG/slurmctld.out" 2>&1
setsid slurmd -f "$SB_SLURM_CONF" </dev/null >>"$SB_SLURM_LOG/slurmd.out" 2>&1

deadline=$(( $(date +%s) + 60 ))
state=""
while [ "$(date +%s)" -lt "$deadline" ]; do
  state="$(timeout 10 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1)"
  case "$state" in
    idle|mixed|allocated|completing) break ;;
    down|drain|drained|draining|fail|failing|inval)
      scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 ;;
  esac
  sleep 1
done
case "$state" in
  idle|mixed|allocated|completing) ;;
  *)
    echo "slurm_up: node $NODE did not become idle within 60 s (state: '${state:-none}')" >&2
    scontrol show node "$NODE" >&2 2>/dev/null
    show_logs "$SB_SLURM_LOG/slurmctld.out" "$SB_SLURM_LOG/slurmctld.log" \
      "$SB_SLURM_LOG/slurmd.out" "$SB_SLURM_LOG/slurmd.log"
    exit 1 ;;
esac
acct="with accounting (sacct)"
[ "$SB_SLURM_ACCOUNTING" = 1 ] || acct="without accounting"
say "up ($acct): $(sinfo -h -o '%P %D %T %C' | tr '\n' ' ')"
exit 0
