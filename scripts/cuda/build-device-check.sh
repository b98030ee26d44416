#!/usr/bin/env bash
# Builds the CUDA test binary, the GPU bench and the CLI here (no GPU needed), strips and
# compresses them into .devrun/ for a GPU machine without a Rust toolchain (docs/cuda.md).
#
#   bash scripts/cuda/build-device-check.sh /path/to/cuda13-prefix
#
# The prefix is the one given to shared/cuda/setup-cuda13.sh (CUDA 13.0 from PyPI wheels).
set -euo pipefail
P=${1:?usage: build-device-check.sh <cuda13 prefix>}
export CUDA_HOME=$P/cuda PATH=$P/cuda/bin:$PATH CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH=$P/cuda/lib64:$P/cuda/lib64/stubs
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target-cuda}
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.devrun/' .git/info/exclude 2>/dev/null || echo '/.devrun/' >> .git/info/exclude
mkdir -p .devrun && rm -f .devrun/*.xz
exe() { cargo "$@" --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable"): print(m["executable"])' | tail -1; }
cp "$(exe test --release -p lowbit-nn --features cuda --test cuda --no-run)" .devrun/cuda_test
cp "$(exe bench --features cuda --bench cuda --no-run)" .devrun/cuda_bench
cp "$(exe build --release -p lowbit-cli --features cuda)" .devrun/lowbit
strip .devrun/cuda_test .devrun/cuda_bench .devrun/lowbit
xz -T0 -6 .devrun/cuda_test .devrun/cuda_bench .devrun/lowbit
cp scripts/cuda/device-check.sh .devrun/run.sh
cp scripts/cuda/bench-ratios.py .devrun/
ls -la .devrun
