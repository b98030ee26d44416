#!/bin/bash
# Runs on the GPU machine, from the repository root (the `device` tool: carry `.devrun`):
# the CUDA tests, the GPU bench, the CLI on the GPU. Logs go to $OUT (or ./devrun-out).
set -o pipefail
OUT=${OUT:-$PWD/devrun-out}; mkdir -p "$OUT"
ROOT=$PWD
# The binaries find the repository's data through the path they were built at.
[ -e /work/main ] || { mkdir -p /work && ln -s "$ROOT" /work/main; }
LIBS=$(find / -xdev \( -name 'libcublas.so.13' -o -name 'libcurand.so.10' -o -name 'libcudart.so.13' \
    -o -name 'libcublasLt.so.13' -o -name 'libnvrtc.so.13' \) 2>/dev/null | xargs -r -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=$LIBS$LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv | tee "$OUT/gpu.txt"
mkdir -p /tmp/b && for f in .devrun/*.xz; do b=/tmp/b/$(basename "$f" .xz); xz -dc "$f" > "$b"; chmod +x "$b"; done
cd /work/main/crates/lowbit-nn
timeout 200 /tmp/b/cuda_test 2>&1 | tee "$OUT/test.log" | tail -40
cd /work/main
timeout 150 /tmp/b/cuda_bench --bench --warm-up-time 1 --measurement-time 2 2>&1 | grep -v '^Warning\|^$' | tee "$OUT/bench.log"
python3 .devrun/bench-ratios.py "$OUT/bench.log" 2>&1 | tee "$OUT/ratios.txt"
# Timing variants of the kernels (scripts/cuda/ptx-variants.sh), each under its grid limit.
if [ -f .devrun/ptx/variants.txt ]; then
    mkdir -p /tmp/ptx "$OUT/variants"
    while read -r name blocks _; do
        xz -dc ".devrun/ptx/$name.ptx.xz" > "/tmp/ptx/$name.ptx"
        env LOWBIT_CUDA_PTX="/tmp/ptx/$name.ptx" \
            $( [ "$blocks" != 0 ] && echo LOWBIT_CUDA_MAX_BLOCKS=$blocks ) \
            timeout 120 /tmp/b/cuda_bench --bench --warm-up-time 0.5 --measurement-time 1 < /dev/null 2>&1 |
            grep -v '^Warning\|^$' > "$OUT/variants/$name.log"
        python3 .devrun/bench-ratios.py "$OUT/variants/$name.log" > "$OUT/variants/$name.txt" 2>&1
        echo "== $name (max_blocks $blocks)"; cat "$OUT/variants/$name.txt"
    done < .devrun/ptx/variants.txt | tee "$OUT/variants.txt"
fi
# With LOWBIT_NCU=1: Nsight Compute on one launch each of the fused block kernel (mxfp8_e4m3)
# and the symmetric element kernel (frozen fp8_e4m3): throughput, occupancy, warp stalls.
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
if [ -n "${LOWBIT_NCU:-}" ] && [ -n "$NCU" ]; then
    timeout 150 "$NCU" --launch-count 2 -k regex:'lb_fused_block|lb_apply_sym' \
        --section SpeedOfLight --section Occupancy --section LaunchStats \
        --section WarpStateStats --section ComputeWorkloadAnalysis \
        /tmp/b/cuda_bench --bench --warm-up-time 0.3 --measurement-time 0.5 \
        'fake_quant/(mxfp8_e4m3|fp8_e4m3_static)' < /dev/null > "$OUT/ncu.txt" 2>&1
    echo "ncu: $? (ncu.txt)"
fi
timeout 60 /tmp/b/lowbit run --device cuda --limit 500 -c configs/mxfp8_e4m3.yaml --out /tmp/runs 2>&1 | tail -12 | tee "$OUT/cli.log"
