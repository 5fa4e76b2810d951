#!/usr/bin/env bash
# Stop what tests/slurm/start.sh started (by pid), and cancel leftover jobs.
set -u
: "${SCRATCH:?set SCRATCH to the directory start.sh used}"
scancel --user root 2>/dev/null || true
for pidfile in "$SCRATCH/run/slurmd.pid" "$SCRATCH/run/slurmctld.pid"; do
    if [ -s "$pidfile" ]; then
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -9 "$pid" 2>/dev/null || true
    fi
done
if [ -s /run/munge/munged.pid ]; then
    kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
fi
rm -f /etc/slurm/slurm.conf
exit 0
