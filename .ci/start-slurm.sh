#!/usr/bin/env bash
# Start (or stop) a throwaway single-node Slurm cluster on this host for the Slurm tests.
#
# Why: deploy/slurm/worker.sbatch is tested against a real Slurm (slurmctld + slurmd + munge), not a
# stand-in. Needs Debian's `slurm-wlm` and `munge` and root (slurmd starts jobs as their user). The cluster
# lives in a temporary folder with its own slurm.conf; clients find it through SLURM_CONF, so a system
# Slurm configuration is never touched.
#
# Usage (from the repository root, as root):
#   eval "$(.ci/start-slurm.sh)"     # start; exports SLURM_CONF and EDGESEARCH_TEST_SLURM_DIR into this shell
#   sinfo; .venv/bin/python -m pytest tests/deploy/test_slurm.py
#   .ci/start-slurm.sh stop          # stop the daemons and delete the folder (reads the exported variables)
#
# `start` prints only `export NAME=VALUE` lines on stdout (everything else goes to stderr), so it can be eval'ed.
# The node has this machine's CPUs and lets two jobs share a CPU (OverSubscribe=FORCE:2), so an array of three
# small workers runs at once on two cores. Ports: EDGESEARCH_SLURM_PORT (slurmctld, default 46817) and the next
# one (slurmd).
set -euo pipefail

log() { echo "start-slurm: $*" >&2; }

stop() {
    local dir=${EDGESEARCH_TEST_SLURM_DIR:-}
    if [[ -z $dir || ! -d $dir ]]; then
        log "nothing to stop (EDGESEARCH_TEST_SLURM_DIR is not set)"
        return 0
    fi
    for pidfile in "$dir"/slurmd.pid "$dir"/slurmctld.pid; do
        if [[ -f $pidfile ]]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
        fi
    done
    sleep 1
    rm -rf "$dir"
    log "stopped"
}

if [[ ${1:-start} == stop ]]; then
    stop
    exit 0
fi

for tool in slurmctld slurmd sbatch sinfo munged; do
    if ! command -v "$tool" >/dev/null; then
        log "$tool not found: apt-get install slurm-wlm munge"
        exit 1
    fi
done
if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (slurmd starts each job as its submitting user)"
    exit 1
fi

# munge authenticates every Slurm message; the package ships a key. Started as its own user, once per machine.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
fi

dir=$(mktemp -d /tmp/edgesearch-slurm.XXXXXX)
mkdir -p "$dir/state" "$dir/spool"
host=$(hostname -s)
port=${EDGESEARCH_SLURM_PORT:-46817}
cat >"$dir/slurm.conf" <<EOF
ClusterName=edgesearch-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort=$port
SlurmdPort=$((port + 1))
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
KillWait=30
NodeName=$host CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:2
EOF

export SLURM_CONF=$dir/slurm.conf
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 100); do
    if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
        log "Slurm $(sinfo -V | cut -d' ' -f2) up: node $host idle (folder $dir)"
        echo "export SLURM_CONF=$SLURM_CONF"
        echo "export EDGESEARCH_TEST_SLURM_DIR=$dir"
        exit 0
    fi
    sleep 0.2
done
log "the node did not come up; slurmctld.log and slurmd.log follow"
tail -20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
EDGESEARCH_TEST_SLURM_DIR=$dir stop
exit 1
