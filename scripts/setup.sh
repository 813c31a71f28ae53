#!/usr/bin/env bash
# Installs every dependency on Debian 12 (apt-get) and builds controlnet.cpp in Release.
# Usage: scripts/setup.sh [build-dir]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}

packages=(
  cmake ninja-build g++ pkg-config
  libtorch-dev libopenblas0-pthread     # tensors and autograd; OpenBLAS makes fp32 matmul ~15x faster
  libgloo-dev                            # Gloo headers for c10d's CPU process group (multi-process training)
  libopencv-dev libpng-dev               # images, Canny/Hough, PNG text chunks
  libicu-dev                             # Unicode classes and normalisation for the tokenizer
  nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libgtest-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)"
