#!/usr/bin/env bash
# A one-node SLURM on this machine from Debian's packages: for the tests, and to try the cluster
# path before using a real cluster.
#
#   slurm/local-cluster.sh start    install if missing, configure, start; prints SLURM_CONF
#   slurm/local-cluster.sh stop     stop the daemons (by the pids in their pid files)
#   slurm/local-cluster.sh status
#
# Everything lives under $CARRIERFLOW_SLURM_DIR (default /tmp/carrierflow-slurm); clients need
# `export SLURM_CONF=$CARRIERFLOW_SLURM_DIR/slurm.conf`. Runs as root (SlurmUser=root), no
# cgroups, no accounting, no munge (auth/none): a test cluster, never a production one.
set -euo pipefail
DIR=${CARRIERFLOW_SLURM_DIR:-/tmp/carrierflow-slurm}
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null; then
        return
    fi
    SUDO=$([[ $(id -u) == 0 ]] && echo "" || echo "sudo")
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client >/dev/null
}

configure() {
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    local host node memory
    host=$(hostname -s)
    # the node as slurmd sees it, with RealMemory a little below the measured value (or the node
    # is drained for "Low RealMemory")
    node=$(slurmd -C | head -1 | sed -E 's/ RealMemory=[0-9]+//; s/^NodeName=[^ ]+ //')
    memory=$(slurmd -C | head -1 | sed -E 's/.*RealMemory=([0-9]+).*/\1/')
    cat >"$CONF" <<CONF
ClusterName=carrierflow-local
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/none
CredType=cred/none
SlurmUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MailProg=/bin/true
MinJobAge=3600
ReturnToService=2
DependencyParameters=kill_invalid_depend
NodeName=$host NodeAddr=127.0.0.1 $node RealMemory=$((memory * 9 / 10)) State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
}

running() {
    [[ -f "$DIR/$1.pid" ]] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null
}

start() {
    install
    if running slurmctld && running slurmd; then
        echo "SLURM_CONF=$CONF (already running)"
        return
    fi
    configure
    slurmctld
    slurmd
    for _ in $(seq 60); do
        if sinfo -h -o %T 2>/dev/null | grep -q idle; then
            echo "SLURM_CONF=$CONF"
            return
        fi
        sleep 0.5
    done
    echo "local SLURM did not come up; logs in $DIR/log" >&2
    stop
    exit 1
}

stop() {
    for daemon in slurmd slurmctld; do
        if running "$daemon"; then
            pid=$(cat "$DIR/$daemon.pid")
            kill "$pid"
            for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        fi
        rm -f "$DIR/$daemon.pid"
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) if running slurmctld && running slurmd; then sinfo; else echo "not running"; exit 3; fi ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
