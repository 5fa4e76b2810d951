#!/usr/bin/env bash
# Bring up a single-node SLURM (Debian's slurm 22.05 + munge) for the cluster test.
# Usage: SCRATCH=/tmp/slurm-test bash tests/slurm/start.sh   (as root)
# Daemons run in the background; tests/slurm/stop.sh stops exactly what this started.
set -euo pipefail
: "${SCRATCH:?set SCRATCH to a scratch directory}"
mkdir -p "$SCRATCH"/{run,log,spool/slurmd,spool/slurmctld}
export DEBIAN_FRONTEND=noninteractive

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    apt-get install -y -q --no-install-recommends munge slurmctld slurmd slurm-client \
        >"$SCRATCH/log/apt.log"
fi

if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
fi
munge -n | unmunge >/dev/null

host=$(hostname -s)
getent hosts "$host" >/dev/null || echo "127.0.0.1 $host" >>/etc/hosts
mem_mb=$(($(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 2048))
cpus=$(nproc)

# Without accounting (no slurmdbd) the executor plugin must poll with squeue; jobs need a
# default memory per CPU or one job takes the whole node; and srun inside a job only
# finds the config at /etc/slurm/slurm.conf (it strips SLURM_* variables).
cat >"$SCRATCH/slurm.conf" <<CONF
ClusterName=episcribe-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
MinJobAge=300
SlurmctldPidFile=$SCRATCH/run/slurmctld.pid
SlurmdPidFile=$SCRATCH/run/slurmd.pid
SlurmdSpoolDir=$SCRATCH/spool/slurmd
StateSaveLocation=$SCRATCH/spool/slurmctld
SlurmctldLogFile=$SCRATCH/log/slurmctld.log
SlurmdLogFile=$SCRATCH/log/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
mkdir -p /etc/slurm
ln -sf "$SCRATCH/slurm.conf" /etc/slurm/slurm.conf
slurmctld
slurmd
for _ in $(seq 120); do
    if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
        echo "slurm is up ($cpus CPUs, ${mem_mb} MB)"
        exit 0
    fi
    sleep 0.5
done
echo "slurm did not become idle; see $SCRATCH/log" >&2
exit 1
