#!/usr/bin/env bash
# Downloads the .deb files of dynsim's build dependencies into DIR (default .deps/, git-ignored)
# and unpacks them into DIR/root, for machines without apt or network (e.g. a lent GPU machine):
# carry DIR there and run `tools/gpu_check.sh --deps DIR`. Needs apt-get here (no root for
# `apt-get download`, but an up-to-date package list: run `apt-get update` first if it fails).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-.deps}"
mkdir -p "$dir/debs" "$dir/root"
pkgs=(libeigen3-dev doctest-dev libcli11-dev nlohmann-json3-dev libtomlplusplus-dev libstb-dev
      zlib1g-dev libxxhash-dev)
(cd "$dir/debs" && apt-get download "${pkgs[@]}")
for f in "$dir"/debs/*.deb; do dpkg -x "$f" "$dir/root"; done
echo "fetch_deps: ${#pkgs[@]} packages unpacked under $dir/root"
