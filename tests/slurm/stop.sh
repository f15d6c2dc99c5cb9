#!/usr/bin/env bash
# Stop the daemons started by start.sh (by the PIDs in their pid files under $BASE/state) and remove
# the /etc/slurm/slurm.conf link if it points at $BASE/slurm.conf. Safe to run twice.
set -uo pipefail
: "${BASE:?set BASE to the directory given to start.sh}"
BASE=$(cd "$BASE" 2>/dev/null && pwd) || exit 0
STATE=$BASE/state
for f in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" "$STATE/munge-run/munged.pid"; do
  [ -s "$f" ] || continue
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || continue
  for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  echo "stopped $pid ($f)"
done
if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$BASE/slurm.conf" ]; then
  rm -f /etc/slurm/slurm.conf
fi
exit 0
