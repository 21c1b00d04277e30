#!/usr/bin/env bash
# A throwaway single-node SLURM cluster on this machine, for the launcher tests and trying
# `--launcher slurm` without a real cluster.
#   scripts/local_slurm.sh start DIR   prints the slurm.conf path: export SLURM_CONF=<it>
#   scripts/local_slurm.sh stop DIR
# Needs Debian's `slurm-wlm` and `munge` packages, and root (slurmd starts jobs as their
# user). munged, slurmctld and slurmd keep their sockets, state and logs in DIR; one
# partition `local` holds this machine with all its cores.
set -euo pipefail
action=${1:?usage: $0 start|stop DIR}
dir=$(realpath -m "${2:?usage: $0 start|stop DIR}")
for program in munged slurmctld slurmd sbatch; do
    if ! command -v "$program" >/dev/null && [ ! -x "/usr/sbin/$program" ]; then
        echo "no $program here: apt-get install -y slurm-wlm munge" >&2
        exit 1
    fi
done
export PATH="$PATH:/usr/sbin"
export SLURM_CONF="$dir/slurm.conf"

stop_daemon() {  # pid file
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 0
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$1"
}

case $action in
start)
    if [ "$(id -u)" != 0 ]; then
        echo "the local SLURM cluster needs root (slurmd starts jobs as their user)" >&2
        exit 1
    fi
    mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
    chmod 755 "$dir"  # munged runs as `munge`, and must reach its folder inside
    chown munge: "$dir/munge" && chmod 755 "$dir/munge"  # clients reach the socket
    if [ ! -f "$dir/munge/munge.key" ]; then
        runuser -u munge -- mungekey --create --keyfile="$dir/munge/munge.key"
    fi
    if ! [ -f "$dir/munge/munged.pid" ] || ! kill -0 "$(cat "$dir/munge/munged.pid")" 2>/dev/null; then
        runuser -u munge -- munged --socket="$dir/munge/munge.socket" \
            --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/munged.pid" \
            --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"
    fi
    free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
    node=$(hostname -s)
    cores=$(nproc)
    memory=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024))
    # A running cluster keeps its configuration (and ports).
    [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null ||
        cat >"$SLURM_CONF" <<EOF
ClusterName=rnnlab-local
SlurmctldHost=$node(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
SlurmUser=root
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
KillWait=5
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cores RealMemory=$memory State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null || slurmctld -i
    [ -f "$dir/slurmd.pid" ] && kill -0 "$(cat "$dir/slurmd.pid")" 2>/dev/null || slurmd
    for _ in $(seq 100); do
        if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
            echo "$SLURM_CONF"
            exit 0
        fi
        sleep 0.2
    done
    echo "SLURM did not come up: see $dir/slurmctld.log and $dir/slurmd.log" >&2
    exit 1
    ;;
stop)
    stop_daemon "$dir/slurmd.pid"
    stop_daemon "$dir/slurmctld.pid"
    stop_daemon "$dir/munge/munged.pid"
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
