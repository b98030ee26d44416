// Test kernels of the emulator itself, compiled only with -DLB_EMU_SELFTEST (selftest.py):
// the f16 conversions of the cuda_fp16.h stub, the intrinsics' NaN rules, every warp
// collective, and the fault reports (a lane that returns early, mismatched collectives, a
// partial mask, out-of-bounds accesses, a lane stack overflow).
#pragma once

#include <cuda_fp16.h>

// out[i] = the f32 bits of __half2float(in[i]).
extern "C" __global__ void lbt_f16_to_f32(const unsigned short* in, u32* out, i64 n) {
    const i64 stride = (i64)gridDim.x * blockDim.x;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = __float_as_uint(__half2float(__ushort_as_half(in[i])));
}

// out[i] = the f16 bits of __float2half_rn(f32 bits in[i]).
extern "C" __global__ void lbt_f32_to_f16(const u32* in, unsigned short* out, i64 n) {
    const i64 stride = (i64)gridDim.x * blockDim.x;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = __half_as_ushort(__float2half_rn(__uint_as_float(in[i])));
}

// Every warp collective once: thread t reads in[t] and writes LBT_WARP_OUTS words at
// out[t * LBT_WARP_OUTS].
#define LBT_WARP_OUTS 24
extern "C" __global__ void lbt_warp_ops(const u32* in, u32* out) {
    const u32 t = blockIdx.x * blockDim.x + threadIdx.x;
    const int lane = (int)(threadIdx.x & 31);
    const u32 v = in[t];
    u32* o = out + (u64)t * LBT_WARP_OUTS;
    o[0] = __shfl_sync(FULL, v, lane * 7 + 3);
    o[1] = __shfl_sync(FULL, v, -1 - lane);
    o[2] = __shfl_xor_sync(FULL, v, 5);
    o[3] = __shfl_down_sync(FULL, v, 3);
    o[4] = __shfl_up_sync(FULL, v, 3);
    o[5] = __shfl_down_sync(FULL, v, 3, 8);
    o[6] = __shfl_up_sync(FULL, v, 2, 16);
    o[7] = __shfl_sync(FULL, v, 5, 16);
    o[8] = __shfl_xor_sync(FULL, v, 16, 16);
    o[9] = __ballot_sync(FULL, v & 1u);
    o[10] = (u32)__all_sync(FULL, v != 0u);
    o[11] = (u32)__any_sync(FULL, v == 7u);
    o[12] = __reduce_max_sync(FULL, v);
    o[13] = __reduce_min_sync(FULL, v);
    o[14] = __reduce_or_sync(FULL, v);
    o[15] = __reduce_add_sync(FULL, v);
    o[16] = (u32)__reduce_max_sync(FULL, (int)v);
    o[17] = (u32)__reduce_min_sync(FULL, (int)v);
    const long long x = (long long)(((u64)v << 32) | (u64)lane);
    const long long y = __shfl_xor_sync(FULL, x, 1);
    o[18] = (u32)(u64)y;
    o[19] = (u32)((u64)y >> 32);
    o[20] = __float_as_uint(__shfl_sync(FULL, __uint_as_float(v), 0));
    __syncwarp();
    o[21] = threadIdx.x;
    o[22] = blockIdx.x;
    // Lanes do different amounts of work between collectives.
    u32 acc = 0;
    for (int k = 0; k < 4; k++) {
        for (u32 j = 0; j < (v & 7u); j++) acc += j;
        acc += __shfl_down_sync(FULL, acc, 1);
    }
    o[23] = acc;
}

// Intrinsics, math functions and conversions on the inputs in[0..]: thread 0 writes out[0..].
#define LBT_INTRINSIC_OUTS 28
extern "C" __global__ void lbt_intrinsics(const u32* in, u32* out) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const float inf = __uint_as_float(in[0]);      // 0x7F800000
    const float zero = __uint_as_float(in[1]);     // 0
    const float one = __uint_as_float(in[2]);      // 1.0
    const float nan = __uint_as_float(in[3]);      // 0xFFC01234
    const float min_normal = __uint_as_float(in[4]); // 0x00800000
    const float tiny = __uint_as_float(in[5]);     // 2^-24
    const float two_half = __uint_as_float(in[6]); // 2.5
    out[0] = __float_as_uint(__fmul_rn(inf, zero));
    out[1] = __float_as_uint(__fadd_rn(inf, -inf));
    out[2] = __float_as_uint(__fdiv_rn(zero, zero));
    out[3] = __float_as_uint(__fsqrt_rn(-one));
    out[4] = __float_as_uint(__fmul_rn(nan, one));
    out[5] = __float_as_uint(__fmul_rn(min_normal, 0.5f));
    out[6] = __float_as_uint(__fadd_rn(one, tiny));
    out[7] = __float_as_uint(__fadd_rn(__uint_as_float(0x3F800001u), tiny));
    const u64 d = (u64)__double_as_longlong(__dmul_rn((double)inf, (double)zero));
    out[8] = (u32)d;
    out[9] = (u32)(d >> 32);
    out[10] = (u32)__clz((int)(in[1]));
    out[11] = (u32)__clz(1);
    out[12] = (u32)__popc(0xF0F0u);
    out[13] = (u32)__ffs((int)in[1]);
    out[14] = (u32)__ffs(0x100);
    out[15] = __float_as_uint(fminf(nan, nan));
    out[16] = __float_as_uint(fminf(nan, 2.0f));
    out[17] = __float_as_uint(rintf(two_half));
    out[18] = __float_as_uint(rintf(nan));
    out[19] = (u32)__float2int_rn(nan);
    out[20] = (u32)__float2int_rz(3e9f);
    out[21] = __float2uint_rn(-5.0f);
    out[22] = max(3u, 5u);
    out[23] = (u32)min(-3, 2);
    out[24] = __half_as_ushort(__float2half_rn(nan));
    out[25] = __float_as_uint(__half2float(__ushort_as_half(0xFC01)));
    out[26] = (u32)((u64)__double_as_longlong(__ddiv_rn(0.0, (double)zero)) >> 32);
    u32 cell = 5u;
    const u32 old = atomicMax(&cell, 9u);
    out[27] = old * 100u + cell;
}

// Half the lanes return, the others shuffle with the full mask: a fault.
extern "C" __global__ void lbt_early_exit(u32* out) {
    if (threadIdx.x & 1u) return;
    out[threadIdx.x] = __shfl_sync(FULL, threadIdx.x, 0);
}

// Lanes 0..15 shuffle, lanes 16..31 vote: a fault.
extern "C" __global__ void lbt_mixed_ops(u32* out) {
    if ((threadIdx.x & 31u) < 16u)
        out[threadIdx.x] = __shfl_sync(FULL, 1u, 0);
    else
        out[threadIdx.x] = __ballot_sync(FULL, 1);
}

// A partial mask: unsupported, reported as a fault.
extern "C" __global__ void lbt_partial_mask(u32* out) {
    out[threadIdx.x] = __shfl_sync(0x0000FFFFu, 1u, 0);
}

// Thread 37 of block 1 (warp 1, lane 5) stores `value` at p[index].
extern "C" __global__ void lbt_store(u32* p, i64 index, u32 value) {
    if (blockIdx.x == 1 && threadIdx.x == 37) p[index] = value;
}

// Thread 37 of block 1 loads p[index] into out[0].
extern "C" __global__ void lbt_load(const u32* p, i64 index, u32* out) {
    if (blockIdx.x == 1 && threadIdx.x == 37) out[0] = __ldg(p + index);
}

// A recursion `depth` deep with 1 KiB frames (overflows the lane stack when deep enough).
__device__ __noinline__ u32 lbt_recurse(int depth, u32 seed) {
    volatile u32 frame[256];
    for (int i = 0; i < 256; i++) frame[i] = seed + (u32)i;
    const u32 below = depth > 0 ? lbt_recurse(depth - 1, seed * 3u + 1u) : 0u;
    return below + frame[seed & 255u];
}
extern "C" __global__ __launch_bounds__(256) void lbt_recursion(u32* out, int depth) {
    out[blockIdx.x * blockDim.x + threadIdx.x] = lbt_recurse(depth, threadIdx.x);
}

// A block barrier: not supported.
extern "C" __global__ void lbt_syncthreads(u32* out) {
    __syncthreads();
    out[threadIdx.x] = 1u;
}

// The selftest kernels, for register_kernels() in emulator.cpp.
#define LB_EMU_SELFTEST_KERNELS                                                                 \
    LB_EMU_KERNEL(lbt_f16_to_f32);                                                              \
    LB_EMU_KERNEL(lbt_f32_to_f16);                                                              \
    LB_EMU_KERNEL(lbt_warp_ops);                                                                \
    LB_EMU_KERNEL(lbt_intrinsics);                                                              \
    LB_EMU_KERNEL(lbt_early_exit);                                                              \
    LB_EMU_KERNEL(lbt_mixed_ops);                                                               \
    LB_EMU_KERNEL(lbt_partial_mask);                                                            \
    LB_EMU_KERNEL(lbt_store);                                                                   \
    LB_EMU_KERNEL(lbt_load);                                                                    \
    LB_EMU_KERNEL(lbt_recursion);                                                               \
    LB_EMU_KERNEL(lbt_syncthreads);
