#!/usr/bin/env bash
# Installs what dynsim needs from Debian 12's packages, idempotently: only missing packages are
# installed, and apt-get update runs only when something is missing. Runs as root (no sudo) or
# with sudo when available. Usage: tools/setup.sh [--tests]
#   --tests  also installs the test references (python3-numpy, python3-torch for /usr/bin/python3),
#            Fashion-MNIST (dataset-fashion-mnist) for the dataset reader test, Slurm and munge
#            (slurm-wlm, munge) for the one-node Slurm scan test, snakemake for the Snakefile's
#            test, python3-xarray + python3-h5netcdf to read `scan collect --responses` back
set -euo pipefail

# Build: compiler, CMake and header libraries; HDF5 for .h5 outputs. The main job's plot of the
# response traces uses numpy + matplotlib under /usr/bin/python3; python3-skimage ships the CC0
# natural images of the retina generator and figure F7.
pkgs=(cmake make g++ libeigen3-dev doctest-dev libcli11-dev nlohmann-json3-dev libtomlplusplus-dev
      libstb-dev libhdf5-dev zlib1g-dev libxxhash-dev python3-numpy python3-matplotlib python3-skimage)
if [[ "${1:-}" == "--tests" ]]; then
  pkgs+=(python3-torch python3-h5py python3-xarray python3-h5netcdf dataset-fashion-mnist slurm-wlm
        munge snakemake)
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup: all dependencies present"
  exit 0
fi

as_root=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then as_root=(sudo); else
    echo "setup: missing ${missing[*]}; run as root to install them" >&2
    exit 77
  fi
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
