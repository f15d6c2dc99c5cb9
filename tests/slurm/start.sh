#!/usr/bin/env bash
# Single-node SLURM on localhost: no systemd, no cgroups, no accounting database; one fake GPU.
# Everything (slurm.conf, gres.conf, munge key and socket, spool, logs, pid files) lives under $BASE,
# which must be given. Exit 3: the host already runs a SLURM (port or /etc/slurm/slurm.conf taken).
# Needs root (daemons, /etc/slurm/slurm.conf link) and the slurm-wlm + munge packages.
#   BASE=/tmp/x tests/slurm/start.sh   ->  prints `sinfo`, exits 0 once the node is idle
set -euo pipefail
: "${BASE:?set BASE to an empty state directory}"
BASE=$(mkdir -p "$BASE" && cd "$BASE" && pwd)
STATE=$BASE/state
NODE=$(hostname -s)
CPUS=${SLURM_NODE_CPUS:-$(nproc)}
# advertised memory: 80 % of the host's, at most 4000 MB (more than the host has would drain the node)
MEM=${SLURM_NODE_MEM_MB:-$(awk '/^MemTotal/ {m = int($2 / 1024 * 0.8); print (m < 4000 ? m : 4000)}' /proc/meminfo)}
# a dangling link is left over from a run whose stop.sh never ran
if [ -L /etc/slurm/slurm.conf ] && [ ! -e /etc/slurm/slurm.conf ]; then rm -f /etc/slurm/slurm.conf; fi
if [ -e /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" != "$BASE/slurm.conf" ]; then
  echo "start.sh: /etc/slurm/slurm.conf exists and is not ours; refusing to replace it" >&2; exit 3
fi
for port in 6817 6818; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "start.sh: port $port is in use (another slurmctld/slurmd running?)" >&2; exit 3
  fi
done
mkdir -p "$STATE"/{munge,munge-run,ctld,d,log}
chmod 755 "$BASE" "$STATE"

# munge: own key and socket under $STATE; munged refuses to run as root, so it runs as user munge.
# Key dir 700 / key 600 (munged checks), socket dir 755 (every client must reach the socket).
chmod 700 "$STATE/munge"
[ -s "$STATE/munge/munge.key" ] || mungekey --create --keyfile="$STATE/munge/munge.key"
chown -R munge:munge "$STATE/munge" "$STATE/munge-run"
chmod 755 "$STATE/munge-run"
chmod 600 "$STATE/munge/munge.key"
MUNGE_SOCK=$STATE/munge-run/munge.socket.2
runuser -u munge -- munged \
  --key-file="$STATE/munge/munge.key" --socket="$MUNGE_SOCK" \
  --pid-file="$STATE/munge-run/munged.pid" --log-file="$STATE/munge/munged.log" \
  --seed-file="$STATE/munge/munged.seed"
munge -n -S "$MUNGE_SOCK" | unmunge -S "$MUNGE_SOCK" >/dev/null

# slurm.conf needs absolute paths, hence generated. No slurmdbd: job status comes from squeue, which
# keeps finished jobs for MinJobAge (the plugin wants >= 3 x slurm-init-seconds-before-status-checks).
# DefMemPerCPU: a job without --mem would otherwise take the whole node and jobs would serialize.
cat > "$BASE/slurm.conf" <<CONF
ClusterName=localcluster
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
ReturnToService=2
MinJobAge=600
KillWait=5
OverTimeLimit=0
SchedulerType=sched/backfill
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
# Fake GPU: gres/gpu drops a GPU without a device file, so bind it to /dev/null.
echo "NodeName=$NODE Name=gpu File=/dev/null" > "$BASE/gres.conf"

export SLURM_CONF=$BASE/slurm.conf
# The jobstep plugin strips SLURM_CONF before its inner srun, so clients inside jobs only find the
# default path: link it (stop.sh removes the link only if it still points here).
mkdir -p /etc/slurm
ln -sfn "$BASE/slurm.conf" /etc/slurm/slurm.conf
slurmctld
slurmd
for _ in $(seq 1 30); do
  if sinfo -h -o %T 2>/dev/null | grep -qx idle; then sinfo; exit 0; fi
  sleep 1
done
sinfo -R >&2 || true
echo "start.sh: node did not become idle; see $STATE/log" >&2
exit 1
