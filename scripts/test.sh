#!/usr/bin/env bash
# Builds (if needed) and runs the whole test suite. Golden fixtures are read from
# ../shared/golden or $CONTROLNET_GOLDEN_DIR; without them those tests skip.
# Usage: scripts/test.sh [build-dir] [extra ctest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
[ -f "$build/build.ninja" ] || cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)"
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" "$@"
