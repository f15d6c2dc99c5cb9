#!/usr/bin/env bash
# Install the Debian packages of a single-node SLURM (slurm-wlm, munge) when they are missing.
# Exit status: 0 = installed (or already there); non-zero with the reason on stderr otherwise.
set -uo pipefail
if command -v sinfo >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
  && command -v munged >/dev/null; then
  exit 0
fi
[ "$EUID" = 0 ] || { echo "install.sh: SLURM is not installed and installing it needs root" >&2; exit 2; }
command -v apt-get >/dev/null || { echo "install.sh: SLURM is not installed and apt-get is unavailable" >&2; exit 3; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || { echo "install.sh: apt-get update failed (no network or no apt sources?)" >&2; exit 4; }
apt-get install -y -qq slurm-wlm munge >/dev/null \
  || { echo "install.sh: apt-get install slurm-wlm munge failed" >&2; exit 5; }
for b in sinfo slurmctld slurmd munged mungekey; do
  command -v "$b" >/dev/null || { echo "install.sh: $b still missing after apt-get install" >&2; exit 6; }
done
