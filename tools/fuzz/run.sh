#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, ASan + UBSan, in build-fuzz) and runs
# each for N seconds, seeded from the golden fixtures' safetensors headers and
# checkpoint pickles when they are present. Prints libFuzzer's final figures;
# crashes are saved as build-fuzz/findings/<harness>/crash-*.
# Usage: tools/fuzz/run.sh [seconds per harness, default 60]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
build=build-fuzz
golden=${CONTROLNET_GOLDEN_DIR:-../shared/golden}
[ -f "$build/build.ninja" ] || cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ -DCONTROLNET_FUZZ=ON -DCONTROLNET_BUILD_TESTS=OFF
cmake --build "$build" --target fuzz_safetensors_header fuzz_unpickler

# Seeds: real headers (8-byte data size + JSON) and real pickles.
if [ -d "$golden" ] && command -v python3 > /dev/null; then
  python3 - "$golden" "$build/corpus" <<'PY'
import os, struct, sys, zipfile
golden, corpus = sys.argv[1], sys.argv[2]
for h in ("safetensors_header", "unpickler"):
    os.makedirs(os.path.join(corpus, h), exist_ok=True)
n = 0
for root, _, files in os.walk(golden):
    for f in files:
        path = os.path.join(root, f)
        if f.endswith(".safetensors") and n < 40 and os.path.getsize(path) < 64 << 20:
            with open(path, "rb") as fh:
                length = struct.unpack("<Q", fh.read(8))[0]
                header = fh.read(min(length, 1 << 20))
            size = os.path.getsize(path) - 8 - length
            open(os.path.join(corpus, "safetensors_header", f"{n}"), "wb").write(struct.pack("<Q", size) + header)
            n += 1
        elif f.endswith((".pth", ".ckpt")) and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                for name in z.namelist():
                    if name.endswith("data.pkl"):
                        open(os.path.join(corpus, "unpickler", f.replace("/", "_")), "wb").write(z.read(name))
PY
fi

for harness in safetensors_header unpickler; do
  mkdir -p "$build/corpus/$harness" "$build/findings/$harness"
  echo "== $harness: $seconds s"
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
    "$build/fuzz_$harness" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
    -artifact_prefix="$build/findings/$harness/" "$build/corpus/$harness" 2>&1 |
    grep -E "stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb|Done|ERROR|SUMMARY|crash-|timeout-|oom-" || true
  echo "findings: $(ls "$build/findings/$harness" | wc -l)"
done
