#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the Slurm launcher's tests (needs root):
#   scripts/local_slurm.sh start   # installs Debian's slurmctld, slurmd and munge if absent, starts them
#   scripts/local_slurm.sh stop    # stops what `start` started
# One node with this machine's CPUs and memory, no GPUs; jobs run as root in the submitting
# folder; job dependencies work as on a real cluster.
set -euo pipefail
STATE=${SCALE_SLURM_STATE:-/tmp/scale-local-slurm}
CONF=/etc/slurm/slurm.conf

start() {
    if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null
    fi
    mkdir -p "$STATE"/{ctld,d} /etc/slurm /run/munge /var/log/munge /var/lib/munge /etc/munge
    [ -s /etc/munge/munge.key ] || (dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none && chmod 400 /etc/munge/munge.key)
    local host cpus memory
    host=$(hostname -s)
    cpus=$(nproc)
    memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    cat > "$CONF" <<EOF
ClusterName=scale-local
SlurmctldHost=${host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=600
StateSaveLocation=${STATE}/ctld
SlurmdSpoolDir=${STATE}/d
SlurmctldPidFile=${STATE}/slurmctld.pid
SlurmdPidFile=${STATE}/slurmd.pid
SlurmctldLogFile=${STATE}/slurmctld.log
SlurmdLogFile=${STATE}/slurmd.log
NodeName=${host} CPUs=${cpus} RealMemory=${memory} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
    pgrep -x munged >/dev/null || munged --force
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    for _ in $(seq 60); do
        if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
            echo "local Slurm cluster up: $(sinfo -h -o '%P %D %t %c CPUs')"
            return 0
        fi
        scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
        sleep 1
    done
    echo "local Slurm cluster did not come up; see $STATE/*.log" >&2
    return 1
}

stop() {
    pkill -x slurmd || true
    pkill -x slurmctld || true
    pkill -x munged || true
}

"${1:-start}"
