#!/usr/bin/env bash
# slurm-local.sh — a real one-node Slurm cluster (munged + slurmctld + slurmd from Debian's
# slurm-wlm and munge packages) for testing `diffnmf sweep --executor slurm`. No systemd, no
# cgroups, no accounting database (status reads squeue; finished jobs are kept for a day).
#
#   scripts/slurm-local.sh start [--dir DIR] [--cpus N]   # installs packages if missing (root)
#   scripts/slurm-local.sh stop  [--dir DIR]              # cancels jobs, stops the daemons
#   source DIR/env.sh                                     # SLURM_CONF for client commands
#
# DIR defaults to $DIFFNMF_SLURM_DIR or /tmp/diffnmf-slurm. The node is `localhost`, the
# partition `debug`. Daemons are stopped by the pid in their pid file, after checking the
# process name, and nothing else is touched.
set -euo pipefail

cmd="${1:-}"; shift || true
DIR="${DIFFNMF_SLURM_DIR:-/tmp/diffnmf-slurm}"
CPUS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR="$2"; shift 2;;
    --cpus) CPUS="$2"; shift 2;;
    *) echo "slurm-local.sh: unknown argument $1" >&2; exit 2;;
  esac
done
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"
say() { echo "[slurm-local] $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# pid of a daemon from its pid file, only if that process still has the expected name
daemon_pid() {
  local f="$DIR/run/$1.pid" p
  [ -s "$f" ] || return 1
  p=$(cat "$f")
  [ -d "/proc/$p" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$1" ] || return 1
  echo "$p"
}

# retry `$@` every 0.2 s for up to $1 seconds
until_ok() {
  local secs="$1"; shift
  local end=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.2
  done
}

install_packages() {
  local missing=0 b
  for b in munged slurmctld slurmd sbatch squeue scancel sinfo scontrol; do
    command -v "$b" >/dev/null 2>&1 || missing=1
  done
  [ "$missing" = 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "slurm-wlm/munge are missing and installing them needs root"
  say "installing slurmctld slurmd slurm-client munge (apt-get)"
  # keep the packages' maintainer scripts from starting daemons through init scripts
  local policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  local rc=0
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
      slurmctld slurmd slurm-client munge >/dev/null; } || rc=$?
  [ "$policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || die "apt-get install failed (exit $rc)"
}

stop() {
  [ -d "$DIR" ] || { say "nothing to stop in $DIR"; return 0; }
  if daemon_pid slurmctld >/dev/null; then
    local ids
    ids=$(timeout 10 squeue -h -t PD,R,CG,S,CF -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)
    if [ -n "${ids// /}" ]; then
      say "cancelling jobs $ids"
      # shellcheck disable=SC2086
      timeout 10 scancel $ids 2>/dev/null || true
      until_ok 20 bash -c '! squeue -h -t R,CG 2>/dev/null | grep -q .' || true
    fi
  fi
  local d p
  for d in slurmd slurmctld munged; do
    if p=$(daemon_pid "$d"); then
      kill -TERM "$p" 2>/dev/null || true
      until_ok 15 test ! -d "/proc/$p" || { say "$d did not exit; SIGKILL $p"; kill -KILL "$p" 2>/dev/null || true; }
      say "stopped $d (pid $p)"
    fi
    rm -f "$DIR/run/$d.pid"
  done
  if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$CONF" ]; then
    rm -f /etc/slurm/slurm.conf
  fi
}

start() {
  [ "$(id -u)" = 0 ] || die "run as root (the daemons run as SlurmUser=root)"
  local t0; t0=$(date +%s%N)
  install_packages
  if [ "$(cat "$DIR/cpus" 2>/dev/null)" = "${CPUS:-real}" ] \
     && daemon_pid slurmctld >/dev/null && daemon_pid slurmd >/dev/null \
     && scontrol ping 2>/dev/null | grep -q 'is UP'; then
    say "already running from $DIR"; echo "export SLURM_CONF=$CONF"; return 0
  fi
  stop
  rm -rf "$DIR"
  mkdir -p "$DIR"/{run,log,spool/ctld,spool/d,key}
  chmod 755 "$DIR" "$DIR/run"          # munged wants its socket directory o+x
  chmod 700 "$DIR/key"
  echo "${CPUS:-real}" > "$DIR/cpus"
  head -c 1024 /dev/urandom > "$DIR/key/munge.key"; chmod 400 "$DIR/key/munge.key"

  # node hardware as slurmd reports it
  local hw cpus mem field
  hw=$(slurmd -C | head -1)
  field() { echo "$hw" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  cpus=$(field CPUs); mem=$(field RealMemory)
  [ -n "$cpus" ] && [ -n "$mem" ] || die "cannot read the node's CPUs/memory from: $hw"
  local node_hw="CPUs=$cpus Boards=$(field Boards) SocketsPerBoard=$(field SocketsPerBoard) CoresPerSocket=$(field CoresPerSocket) ThreadsPerCore=$(field ThreadsPerCore)"
  local params=""
  if [ -n "$CPUS" ] && [ "$CPUS" != "$cpus" ]; then
    node_hw="CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1"
    params="SlurmdParameters=config_overrides"; cpus="$CPUS"
  fi
  local defmem=$(( mem / cpus )); [ "$defmem" -gt 1024 ] && defmem=1024

  cat > "$CONF" <<EOF
# written by diffnmf scripts/slurm-local.sh: one node, no systemd, no cgroups, no accounting
ClusterName=diffnmf
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=${DIFFNMF_SLURM_PORT:-16817}
SlurmdPort=$(( ${DIFFNMF_SLURM_PORT:-16817} + 1 ))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/run/munge.sock
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
# keep finished jobs in squeue -t all for a day (status and the tests read them there)
MinJobAge=86400
MaxArraySize=100001
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without it a job with no --mem takes the whole node and array tasks run one at a time
DefMemPerCPU=$defmem
SchedulerType=sched/backfill
# no 3 s pause between scheduling passes
SchedulerParameters=batch_sched_delay=0
# Slurm 22.05 reads kill_invalid_depend here (not in SchedulerParameters)
DependencyParameters=kill_invalid_depend
ReturnToService=2
$params
NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost $node_hw RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  : > "$DIR/plugstack.conf"
  echo "export SLURM_CONF=$CONF" > "$DIR/env.sh"
  mkdir -p /etc/slurm
  if [ ! -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then
    ln -sfn "$CONF" /etc/slurm/slurm.conf   # so that any subprocess finds the cluster
  fi

  munged --key-file="$DIR/key/munge.key" --socket="$DIR/run/munge.sock" \
    --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
    --seed-file="$DIR/key/munged.seed" || die "munged failed: $(tail -3 "$DIR/log/munged.log")"
  until_ok 20 bash -c "munge -n -S '$DIR/run/munge.sock' | unmunge -S '$DIR/run/munge.sock'" \
    || die "munge does not answer"
  slurmctld -i || die "slurmctld failed: $(tail -3 "$DIR/log/slurmctld.log")"
  until_ok 60 bash -c "scontrol ping | grep -q 'is UP'" || die "slurmctld does not answer"
  slurmd -N localhost || die "slurmd failed: $(tail -3 "$DIR/log/slurmd.log")"
  until_ok 60 bash -c "sinfo -h -n localhost -o %T | grep -qx idle" || die "node not idle: $(sinfo -N 2>&1)"
  # A first job proves munge/slurmctld/slurmd/slurmstepd end to end and absorbs the ~3 s
  # before slurmctld's first scheduling pass.
  local jid
  jid=$(cd "$DIR" && sbatch --parsable -J ready -o "$DIR/log/ready.out" --wrap 'echo ready') \
    || die "sbatch of the readiness job failed"
  until_ok 60 bash -c "! squeue -h -j $jid -t PD,R,CG,CF | grep -q ." || die "readiness job stuck"
  [ "$(squeue -h -t all -j "$jid" -o %T)" = COMPLETED ] || die "readiness job did not complete"
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  say "cluster up in $((ms / 1000)).$(( (ms % 1000) / 100 ))s: $(sinfo -h -o '%P %a %D %T %C' | head -1)"
  echo "export SLURM_CONF=$CONF"
}

case "$cmd" in
  start) start;;
  stop) stop;;
  *) echo "usage: $0 start|stop [--dir DIR] [--cpus N]" >&2; exit 2;;
esac
