#!/usr/bin/env bash
# Timing variants of the kernels for one GPU session (docs/cuda.md, "Tuning the kernels"):
# compiles kernels/fake_quant.cu with other LB_* macros (f32 entry points only) into
# .devrun/ptx/, with the grid limit each runs under; device-check.sh then runs the GPU bench
# once per variant (LOWBIT_CUDA_PTX, LOWBIT_CUDA_MAX_BLOCKS) beside the embedded kernels.
#
#   bash scripts/cuda/ptx-variants.sh /path/to/cuda13-prefix [name:max_blocks:macros ...]
#
# max_blocks 0 = the plan's own grids. Without variant arguments, the list below.
set -euo pipefail
P=${1:?usage: ptx-variants.sh <cuda13 prefix> [name:max_blocks:macros ...]}
shift
export PATH=$P/cuda/bin:$PATH
cd "$(git rev-parse --show-toplevel)"
if [ $# -eq 0 ]; then
    set -- "b3_g2048:2048:" "b4:0:-DLB_MIN_BLOCKS=4" \
        "pipe_g2048:2048:-DLB_PIPELINE=1" "pipe_b4_g2048:2048:-DLB_PIPELINE=1 -DLB_MIN_BLOCKS=4" \
        "u2pipe_b4_g2048:2048:-DLB_PIPELINE=1 -DLB_UNROLL=2 -DLB_MIN_BLOCKS=4" \
        "u2_b6:0:-DLB_UNROLL=2 -DLB_MIN_BLOCKS=6" "u8_b2:0:-DLB_UNROLL=8 -DLB_MIN_BLOCKS=2"
fi
rm -rf .devrun/ptx && mkdir -p .devrun/ptx
for v in "$@"; do
    IFS=: read -r name blocks macros <<< "$v"
    # shellcheck disable=SC2086 # the macros are separate words
    nvcc --ptx -arch=compute_${CUDA_COMPUTE_CAP:-90} -O3 --fmad=false -prec-div=true -prec-sqrt=true \
        -ftz=false -std=c++17 -Icrates/lowbit-nn/kernels -DLB_ONLY_F32 $macros \
        crates/lowbit-nn/kernels/fake_quant.cu -o ".devrun/ptx/$name.ptx" &
    echo "$name $blocks $macros" >> .devrun/ptx/variants.txt
done
wait
xz -T0 -6 .devrun/ptx/*.ptx
ls -la .devrun/ptx
