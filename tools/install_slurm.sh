#!/usr/bin/env bash
# Install Slurm and munge from Debian/Ubuntu packages, for the Slurm backend's tests
# (tests/test_slurm.py starts a single-node cluster from them; see docs/cluster.md).
# Opt-in: tools/install.sh does not call it; .ci/run does. Needs root (or sudo) and apt-get.
# Idempotent: when the commands are already there, it only says so.
set -euo pipefail

needed=(munged slurmctld slurmd sbatch squeue scancel sinfo scontrol)
missing=()
for tool in "${needed[@]}"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -eq 0 ] && [ -e /etc/munge/munge.key ]; then
  echo "install_slurm.sh: Slurm and munge are installed ($(slurmd -V))"
  exit 0
fi

if ! command -v apt-get >/dev/null; then
  echo "install_slurm.sh: apt-get not found; install slurm-wlm and munge with your package manager" >&2
  exit 1
fi
sudo=
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install_slurm.sh: run as root (apt-get needs it)" >&2; exit 1; }
  sudo=sudo
fi
echo "install_slurm.sh: installing slurm-wlm and munge (missing: ${missing[*]:-munge.key})"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq slurm-wlm munge >/dev/null
echo "install_slurm.sh: done ($(slurmd -V))"
