// lowbit fake-quant kernels: statistics, scales and element fake-quant on the GPU, bit for bit
// the CPU engine of lowbit-quant (the device codec in codec.cuh mirrors the Rust references).
//
// Kernels (instantiated for f32 / f16 / bf16 inputs and 32- / 64-bit indices):
//   lb_stats_init      fills the statistics buffer with the neutral elements
//   lb_reduce_*        per-group abs-max (symmetric) or min/max/NaN (asymmetric), warp-reduced,
//                      flushed with atomics on ordered integer keys
//   lb_apply_*         every element: q(x · (1/s)) · s with its group's scale, the affine
//                      (clamp(round(x/s) + z) − z) · s, the raw element cast, or the
//                      clipped-STE mask; the scale frozen, or computed from the group's
//                      statistics (dynamic)
//   lb_apply_sym_*     the same entry for symmetric fake-quant in aligned quads only (the
//                      group's scale prepared once per run, the elements on the lean path)
//   lb_cast_*          the same entry for the bare cast on the lane fast path only
//                      (one entry point per path: each gets the registers of its own code)
//   lb_fused_block_*   dynamic blocks of 4..128 contiguous elements (MX, NVFP4, int4 groups):
//                      one pass computes the block's amax, its scale and its outputs
//   lb_tiles_gather_*, lb_tiles_scatter_*
//                      2-D tiles: the tensor to and from the tile-major work matrix, on
//                      which the kernels above run with one block per tile
//
// Element order: groups and stochastic-rounding indices follow the CPU engine's work layout
// (per channel: (len, outer, inner); per block along an axis: (outer, inner, len); tiles:
// tile-major, every tile at full size).
//
// Memory-level parallelism: the element kernels step through the tensor in warp tiles of
// LB_UNROLL · 32 quads (4 consecutive elements); lane l takes quads tile + u·32 + l, so each
// load instruction of a warp reads 512 contiguous bytes (f32), and every thread issues its
// LB_UNROLL loads before it computes anything. The reference codec and the rare paths are
// out of line (codec.cuh), so the unrolled fast path stays small. Tried on the H200 and
// dropped: software pipelining of the tile loop (the next tile's loads before this tile's
// computation, with capped grids), 8 quads at 2 blocks per SM, 2 quads at 6 blocks for the
// element kernels (all slower or within the spread; docs/cuda.md).
#include <cuda_fp16.h>
#include "codec.cuh"

// The tile shapes and register budgets, measured on an H200 (docs/cuda.md, "Speed"); each
// can be overridden with -D for timing experiments (scripts/cuda/ptx-variants.sh).
//
// Element, cast, reduction kernels: LB_UNROLL quads per lane and step, at least
// LB_MIN_BLOCKS blocks of 256 threads per SM (4: at most 64 registers a thread).
#ifndef LB_UNROLL
#define LB_UNROLL 4
#endif
#ifndef LB_MIN_BLOCKS
#define LB_MIN_BLOCKS 4
#endif
#define LB_BOUNDS __launch_bounds__(256, LB_MIN_BLOCKS)
// The fused block kernel: the same by default (on the H200, 2 quads at 5 or 6 blocks per SM
// measured within the run-to-run spread of these).
#ifndef LB_FUSED_UNROLL
#define LB_FUSED_UNROLL LB_UNROLL
#endif
#ifndef LB_FUSED_MIN_BLOCKS
#define LB_FUSED_MIN_BLOCKS LB_MIN_BLOCKS
#endif
#define LB_FUSED_BOUNDS __launch_bounds__(256, LB_FUSED_MIN_BLOCKS)

// Mirrors the Rust `#[repr(C)] struct DevGroups` in src/kernel_plan/params.rs.
struct LbGroups {
    i64 n;
    i64 outer;
    i64 len;
    i64 inner;
    i64 size;     // block size (per block)
    i64 nb;       // blocks along the axis
    i64 n_groups;
    int gran;     // 0 per tensor, 1 per channel, 2 per block / whole axis
    int pad;
};

enum { MODE_FAKE = 0, MODE_MASK = 1 };

#define FULL 0xFFFFFFFFu

template <typename T> struct Io;
template <> struct Io<float> {
    static LB_D float load(const float* p, i64 i) { return p[i]; }
    static LB_D void store(float* p, i64 i, float v) { p[i] = v; }
};
struct F16 { unsigned short b; };
struct BF16 { unsigned short b; };
template <> struct Io<F16> {
    static LB_D float load(const F16* p, i64 i) { return f16_to_f32(p[i].b); }
    static LB_D void store(F16* p, i64 i, float v) { p[i].b = f32_to_f16(v); }
};
template <> struct Io<BF16> {
    static LB_D float load(const BF16* p, i64 i) { return bf16_to_f32(p[i].b); }
    static LB_D void store(BF16* p, i64 i, float v) { p[i].b = f32_to_bf16(v); }
};

template <typename T> struct Vec4;
template <> struct Vec4<float> {
    static LB_D void load(const float* p, i64 i, float v[4]) {
        float4 q = *reinterpret_cast<const float4*>(p + i);
        v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
    }
    static LB_D void store(float* p, i64 i, const float v[4]) {
        *reinterpret_cast<float4*>(p + i) = make_float4(v[0], v[1], v[2], v[3]);
    }
};
template <typename H> struct Vec4Half {
    static LB_D void load(const H* p, i64 i, float v[4]) {
        uint2 q = *reinterpret_cast<const uint2*>(p + i);
        H a[4];
        a[0].b = (unsigned short)(q.x & 0xFFFFu); a[1].b = (unsigned short)(q.x >> 16);
        a[2].b = (unsigned short)(q.y & 0xFFFFu); a[3].b = (unsigned short)(q.y >> 16);
        for (int j = 0; j < 4; j++) v[j] = Io<H>::load(a, j);
    }
    static LB_D void store(H* p, i64 i, const float v[4]) {
        H a[4];
        for (int j = 0; j < 4; j++) Io<H>::store(a, j, v[j]);
        uint2 q;
        q.x = (u32)a[0].b | ((u32)a[1].b << 16);
        q.y = (u32)a[2].b | ((u32)a[3].b << 16);
        *reinterpret_cast<uint2*>(p + i) = q;
    }
};
template <> struct Vec4<F16> : Vec4Half<F16> {};
template <> struct Vec4<BF16> : Vec4Half<BF16> {};

// Group (in scale order) and work-layout index of element `idx` (row-major in the tensor).
template <typename I>
LB_D void locate(const LbGroups& G, I idx, I* g, I* w) {
    if (G.gran == 0) {
        *g = 0;
        *w = idx;
        return;
    }
    I inner = (I)G.inner, len = (I)G.len;
    I i = idx % inner;
    I t = idx / inner;
    I l = t % len;
    I o = t / len;
    if (G.gran == 1) {
        *g = l;
        *w = (l * (I)G.outer + o) * inner + i;
    } else {
        I b = l / (I)G.size;
        *g = (o * (I)G.nb + b) * inner + i;
        *w = (o * inner + i) * len + l;
    }
}

// The run of elements around `idx` that share its group and whose work indices go up by one
// with the element index: [*lo, *hi), the group *g and the work index *w0 of *lo. For the
// layouts the quad path takes (per tensor; per channel; blocks along the last axis, inner 1).
// The element kernel locates once per run instead of dividing for every quad.
template <typename I>
LB_D void locate_run(const LbGroups& G, I idx, I* g, I* w0, I* lo, I* hi) {
    if (G.gran == 0) {
        *g = 0;
        *w0 = 0;
        *lo = 0;
        *hi = (I)G.n;
        return;
    }
    I inner = (I)G.inner, len = (I)G.len;
    I t = idx / inner;
    if (G.gran == 1) {
        // Per channel: a row of `inner` elements of one channel.
        I l = t % len;
        I o = t / len;
        *g = l;
        *lo = t * inner;
        *hi = *lo + inner;
        *w0 = (l * (I)G.outer + o) * inner;
    } else {
        // Blocks along the last axis (inner = 1): the block, work index = element index.
        I l = idx % len;
        I o = idx / len;
        I b = l / (I)G.size;
        I end = (b + 1) * (I)G.size;
        *g = o * (I)G.nb + b;
        *lo = o * len + b * (I)G.size;
        *hi = o * len + (end < len ? end : len);
        *w0 = *lo;
    }
}

// Ordered keys: unsigned comparison of keys is float comparison of values.
LB_D u32 key_of(float v) {
    u32 b = f_bits(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
LB_D float value_of(u32 k) { return (k & 0x80000000u) ? bits_f(k & 0x7FFFFFFFu) : bits_f(~k); }

extern "C" __global__ void lb_stats_init(u32* st, i64 count, int asym) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i < count; i += (i64)gridDim.x * blockDim.x)
        st[i] = (asym && (i % 3) == 1) ? 0xFFFFFFFFu : 0u;
}

// Merges one group's statistics into the buffer.
LB_D void flush_stats(u32* st, int asym, i64 g, u32 kmax, u32 kmin, u32 nan) {
    if (asym) {
        atomicMax(&st[3 * g], kmax);
        atomicMin(&st[3 * g + 1], kmin);
        if (nan) atomicOr(&st[3 * g + 2], 1u);
    } else {
        atomicMax(&st[g], kmax);
    }
}

// Each warp owns `per_warp` consecutive elements (a multiple of 32). A step where every lane
// sees the same group is reduced in registers; lane 0 keeps a running value per group and
// flushes it with one atomic when the group changes. Mixed steps go straight to atomics.
// A step of LB_UNROLL sub-steps loads first, then reduces sub-step by sub-step; with `quad`
// a lane divides only when its quad leaves the group's run (locate_run).
//
// With `quad` set (host: every aligned run of 4 elements lies in one group, and x is 4-element
// aligned), each lane takes 4 consecutive elements per step, with one vector load and one
// group lookup; `per_warp` is then a multiple of 128.
template <typename T, typename I>
LB_D void reduce_impl(const T* x, const LbGroups& G, u32* st, int asym, i64 per_warp, int quad) {
    i64 warp = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    i64 w0 = warp * per_warp;
    i64 w1 = w0 + per_warp < G.n ? w0 + per_warp : G.n;
    i64 accg = -1;
    u32 acc_max = 0u, acc_min = 0xFFFFFFFFu, acc_nan = 0u;
    int width = quad ? 4 : 1;
    // With `quad`, the run of the group the lane's last quad lay in (see locate_run).
    I run_g = 0, run_w0 = 0, run_lo = 0, run_hi = 0;
    for (i64 tile = w0; tile < w1; tile += 32 * width * LB_UNROLL) {
        // All loads of the tile first.
        float v[LB_UNROLL][4];
#pragma unroll
        for (int u = 0; u < LB_UNROLL; u++) {
            i64 idx = tile + (i64)(u * 32 + lane) * width;
            v[u][0] = v[u][1] = v[u][2] = v[u][3] = 0.0f;
            if (idx < w1) {
                if (quad) {
                    Vec4<T>::load(x, idx, v[u]);
                } else {
                    v[u][0] = Io<T>::load(x, idx);
                }
            }
        }
#pragma unroll
        for (int u = 0; u < LB_UNROLL; u++) {
            i64 idx = tile + (i64)(u * 32 + lane) * width;
            bool valid = idx < w1;
            I g = 0, w = 0;
            if (valid && quad) {
                if ((I)idx < run_lo || (I)idx >= run_hi)
                    locate_run<I>(G, (I)idx, &run_g, &run_w0, &run_lo, &run_hi);
                g = run_g;
            } else if (valid) {
                locate<I>(G, (I)idx, &g, &w);
            }
            i64 gg = valid ? (i64)g : -1;
            u32 kmax = 0u, kmin = 0xFFFFFFFFu, nan = 0u;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                if (j > 0 && !quad) break;
                if (!valid) break;
                if (asym) {
                    if (is_nan(v[u][j])) {
                        nan = 1u;
                    } else {
                        kmax = max(kmax, key_of(v[u][j]));
                        kmin = min(kmin, key_of(v[u][j]));
                    }
                } else {
                    kmax = max(kmax, f_bits(v[u][j]) & 0x7FFFFFFFu);
                }
            }
            i64 g0 = __shfl_sync(FULL, gg, 0);
            bool uniform = __all_sync(FULL, gg == g0 || gg == -1);
            if (uniform) {
                kmax = __reduce_max_sync(FULL, kmax);
                if (asym) {
                    kmin = __reduce_min_sync(FULL, kmin);
                    nan = __reduce_or_sync(FULL, nan);
                }
                if (lane == 0 && g0 >= 0) {
                    if (g0 != accg) {
                        if (accg >= 0) flush_stats(st, asym, accg, acc_max, acc_min, acc_nan);
                        accg = g0;
                        acc_max = 0u;
                        acc_min = 0xFFFFFFFFu;
                        acc_nan = 0u;
                    }
                    acc_max = max(acc_max, kmax);
                    acc_min = min(acc_min, kmin);
                    acc_nan |= nan;
                }
            } else if (valid) {
                flush_stats(st, asym, gg, kmax, kmin, nan);
            }
        }
    }
    if (lane == 0 && accg >= 0) flush_stats(st, asym, accg, acc_max, acc_min, acc_nan);
}

// The stored scale (and zero point) of group g from its statistics: ScaleRule::scale, or the
// affine rule from min/max (NaN when the group held a NaN). Out of line: it runs once per
// group a thread meets.
struct ScaleZero {
    float sc, z;
};
LB_SLOW ScaleZero group_scale(const u32* st, i64 g, LbCodec c, LbScale S, float ts) {
    ScaleZero r;
    if (S.asym) {
        float mn, mx;
        if (st[3 * g + 2]) {
            mn = bits_f(0x7FC00000u);
            mx = mn;
        } else {
            mx = value_of(st[3 * g]);
            mn = value_of(st[3 * g + 1]);
        }
        affine_from_minmax(S, c, mn, mx, &r.sc, &r.z);
    } else {
        r.sc = scale_from_amax(S, bits_f(st[g]), ts);
        r.z = 0.0f;
    }
    return r;
}

// Where the element kernel finds its groups' scales: frozen (uploaded scales, zero points and
// tensor scale), or computed from the statistics of the reduction pass (dynamic specs: the
// scale computation is fused into the element kernel).
struct ScaleSource {
    const float* scales;
    const float* zeros;
    const u32* stats;
    int from_stats;
    float ts;
};

// The state of the group an element belongs to, kept while consecutive elements share it.
struct GroupState {
    i64 g;
    float sc, z;
    LbApply p;
};

// Every element: its group's scale (cached while consecutive elements share a group), then
// the fake-quant, the affine fake-quant or the clipped-STE mask.
template <typename I>
LB_D float apply_one(const LbFormat& F, const LbScale& S, const ScaleSource& src, int mode,
                     GroupState& st, float v, I g, I w) {
    if ((i64)g != st.g) {
        st.g = (i64)g;
        if (src.from_stats) {
            ScaleZero r = group_scale(src.stats, (i64)g, F.c, S, src.ts);
            st.sc = r.sc;
            st.z = r.z;
        } else {
            st.sc = src.scales[g];
            st.z = S.asym ? src.zeros[g] : 0.0f;
        }
        if (!S.asym) st.p = prepare_sym(effective_scale(S, st.sc, src.ts), S.kind);
    }
    if (mode == MODE_MASK) {
        // The clipped-STE mask: 1 inside [q(-MAX), q(+MAX)] of the group (F saturates).
        float hi, lo;
        if (S.asym) {
            hi = fake_affine(F.c, 3.4028234663852886e38f, st.sc, st.z, (u64)w);
            lo = fake_affine(F.c, -3.4028234663852886e38f, st.sc, st.z, (u64)w);
        } else {
            hi = apply_sym(F, st.p, 3.4028234663852886e38f, (u64)w);
            lo = apply_sym(F, st.p, -3.4028234663852886e38f, (u64)w);
        }
        return (v >= lo && v <= hi) ? 1.0f : 0.0f;
    }
    if (S.asym) return fake_affine(F.c, v, st.sc, st.z, (u64)w);
    return apply_sym(F, st.p, v, (u64)w);
}

// The warp tiles of the element kernels: a warp takes LB_UNROLL · 32 consecutive quads per
// step (tiles first, first + step, …), lane `lane` the quads tile + u·32 + lane.
template <typename I> struct WarpTiles {
    I lane, first, step;
};
template <typename I, int U> LB_D WarpTiles<I> warp_tiles() {
    I warp = ((I)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    I warps = ((I)gridDim.x * blockDim.x) >> 5;
    return WarpTiles<I>{(I)(threadIdx.x & 31), warp * (32 * U), warps * (32 * U)};
}

// A thread's LB_UNROLL quads of `tile` (zeros past the first `nq` quads), every load issued
// before any value is used.
template <typename T, typename I, int U>
LB_D void load_tile(const T* x, I tile, I lane, I nq, float v[U][4]) {
#pragma unroll
    for (int u = 0; u < U; u++) {
        I q = tile + u * 32 + lane;
        v[u][0] = v[u][1] = v[u][2] = v[u][3] = 0.0f;
        if (q < nq) Vec4<T>::load(x, 4 * q, v[u]);
    }
}

// The quad-tile loop of the element kernels: every quad (4 consecutive elements, x and y
// 4-element aligned) of the first `nq`, loads of a tile first, then `op(first element index,
// inputs, outputs)`, then the store.
template <typename T, typename I, typename Op>
LB_D void quad_tiles(const T* x, T* y, I nq, Op& op) {
    WarpTiles<I> w = warp_tiles<I, LB_UNROLL>();
    for (I tile = w.first; tile < nq; tile += w.step) {
        float v[LB_UNROLL][4];
        load_tile<T, I, LB_UNROLL>(x, tile, w.lane, nq, v);
#pragma unroll
        for (int u = 0; u < LB_UNROLL; u++) {
            I q = tile + u * 32 + w.lane;
            if (q < nq) {
                float o[4];
                op(4 * q, v[u], o);
                Vec4<T>::store(y, 4 * q, o);
            }
        }
    }
}

// The bare cast on the lane fast path.
struct CastFast {
    const LbFormat& F;
    template <typename I> LB_D void operator()(I, const float v[4], float o[4]) {
#pragma unroll
        for (int j = 0; j < 4; j++) o[j] = quantize_fast(F, v[j]);
    }
};

// The bare cast through the reference codec.
struct CastRef {
    const LbFormat& F;
    template <typename I> LB_D void operator()(I base, const float v[4], float o[4]) {
#pragma unroll
        for (int j = 0; j < 4; j++) o[j] = quantize_ref(F.c, v[j], (u64)(base + j));
    }
};

// Fake-quant / affine / mask with the group's scale (every aligned quad in one group, with
// consecutive work indices; the run of the group is kept while quads stay in it).
template <typename I> struct Scaled {
    const LbGroups& G;
    const LbFormat& F;
    const LbScale& S;
    ScaleSource src;
    int mode;
    GroupState st;
    I run_g, run_w0, run_lo, run_hi;
    LB_D void operator()(I base, const float v[4], float o[4]) {
        if (base < run_lo || base >= run_hi) locate_run<I>(G, base, &run_g, &run_w0, &run_lo, &run_hi);
        I w = run_w0 + (base - run_lo);
#pragma unroll
        for (int j = 0; j < 4; j++) o[j] = apply_one<I>(F, S, src, mode, st, v[j], run_g, w + j);
    }
};

// Symmetric fake-quant with the group's scale (every aligned quad in one group, with
// consecutive work indices): the group's scale is prepared once per run, the elements take
// the lean q(x · (1/s)) · s (or q(x / s) · s) path.
template <typename I> struct ScaledSym {
    const LbGroups& G;
    const LbFormat& F;
    const LbScale& S;
    ScaleSource src;
    i64 g;
    LbApply p;
    I run_g, run_w0, run_lo, run_hi;
    LB_D void operator()(I base, const float v[4], float o[4]) {
        if (base < run_lo || base >= run_hi) {
            locate_run<I>(G, base, &run_g, &run_w0, &run_lo, &run_hi);
            if ((i64)run_g != g) {
                g = (i64)run_g;
                float sc = src.from_stats ? group_scale(src.stats, g, F.c, S, src.ts).sc
                                          : src.scales[g];
                p = prepare_sym(effective_scale(S, sc, src.ts), S.kind);
            }
        }
        apply_sym4(F, p, v, o, (u64)(run_w0 + (base - run_lo)));
    }
};

// Which code an element kernel carries (one entry point each, so each has the registers of
// its own path): everything; the bare cast on the lane fast path; symmetric fake-quant.
enum { P_ANY = 0, P_CAST = 1, P_SYM = 2 };

// Every element: the bare cast (SK_UNIT), or its group's fake-quant / affine fake-quant /
// clipped-STE mask, with frozen scales or (`from_stats`) scales computed here from the
// reduction's statistics and the tensor amax (NVFP4). With `quad` set (host: x is 4-element aligned and every aligned run of 4
// elements lies in one group, whose work indices are then consecutive) the quads go through
// the tile loop; the rest (or everything, without `quad`) one element per thread and step.
template <typename T, typename I, int P>
LB_D void apply_impl(const T* x, T* y, const LbGroups& G, const LbFormat& F, const LbScale& S,
                     const float* scales, const float* zeros, const float* ts_p,
                     const u32* stats, const u32* tensor_amax, int from_stats, int mode,
                     int quad) {
    float ts;
    if (!from_stats) {
        ts = ts_p[0];
    } else {
        ts = S.kind == SK_NVFP4 ? nvfp4_tensor_scale(S, bits_f(tensor_amax[0])) : 1.0f;
    }
    ScaleSource src{scales, zeros, stats, from_stats, ts};
    I n = (I)G.n;
    I nq = quad ? n / 4 : 0;
    Scaled<I> scaled{G, F, S, src, mode, {-1, 0.0f, 0.0f, prepare_sym(1.0f)}, 0, 0, 0, 0};
    if (P == P_CAST) {
        CastFast op{F};
        quad_tiles<T, I>(x, y, nq, op);
    } else if (P == P_SYM) {
        ScaledSym<I> op{G, F, S, src, -1, prepare_sym(1.0f), 0, 0, 0, 0};
        quad_tiles<T, I>(x, y, nq, op);
    } else if (nq > 0) {
        if (S.kind == SK_UNIT && F.fast) {
            CastFast op{F};
            quad_tiles<T, I>(x, y, nq, op);
        } else if (S.kind == SK_UNIT) {
            CastRef op{F};
            quad_tiles<T, I>(x, y, nq, op);
        } else {
            quad_tiles<T, I>(x, y, nq, scaled);
        }
    }
    I stride = (I)gridDim.x * blockDim.x;
    I t = (I)blockIdx.x * blockDim.x + threadIdx.x;
    for (I idx = 4 * nq + t; idx < n; idx += stride) {
        float v = Io<T>::load(x, idx), o;
        if (P == P_CAST) {
            o = quantize_fast(F, v);
        } else if (S.kind == SK_UNIT) {
            o = quantize_elem(F, v, (u64)idx);
        } else {
            I g, w;
            locate<I>(G, idx, &g, &w);
            o = apply_one<I>(F, S, src, mode, scaled.st, v, g, w);
        }
        Io<T>::store(y, idx, o);
    }
}

// max |x| of the whole tensor (NaN > inf > numbers on the bit patterns), into st[0]. With
// `vec` (x 4-element aligned) in quad tiles, loads first.
template <typename T>
LB_D void amax_impl(const T* x, i64 n, u32* st, int vec) {
    u32 a = 0u;
    i64 stride = (i64)gridDim.x * blockDim.x;
    i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    i64 nq = vec ? n / 4 : 0;
    WarpTiles<i64> w = warp_tiles<i64, LB_UNROLL>();
    for (i64 tile = w.first; tile < nq; tile += w.step) {
        float v[LB_UNROLL][4];
        load_tile<T, i64, LB_UNROLL>(x, tile, w.lane, nq, v);
#pragma unroll
        for (int u = 0; u < LB_UNROLL; u++)
            for (int j = 0; j < 4; j++) a = max(a, f_bits(v[u][j]) & 0x7FFFFFFFu);
    }
    for (i64 i = 4 * nq + t; i < n; i += stride) a = max(a, f_bits(Io<T>::load(x, i)) & 0x7FFFFFFFu);
    a = __reduce_max_sync(FULL, a);
    if ((threadIdx.x & 31) == 0) atomicMax(st, a);
}

// Dynamic symmetric blocks of `size` = 4·L contiguous elements (L = 1..32 lanes, a power of
// two), blocks along the last axis, n a multiple of `size`: each thread holds 4 elements per
// sub-step, the L lanes of a block reduce their amax with shuffles, every lane derives the
// block's scale (the same rule as group_scale) and writes its 4 outputs. One read, one write.
// Warps step through the tensor in quad tiles (a warp-uniform loop, so the shuffles see all
// lanes); a tile's loads come first.
template <typename T>
LB_D void fused_block_impl(const T* x, T* y, i64 n, int lanes, const LbFormat& F,
                           const LbScale& S, const u32* tensor_amax) {
    float ts = S.kind == SK_NVFP4 ? nvfp4_tensor_scale(S, bits_f(tensor_amax[0])) : 1.0f;
    i64 nq = n / 4;
    constexpr int U = LB_FUSED_UNROLL;
    WarpTiles<i64> w = warp_tiles<i64, U>();
    for (i64 tile = w.first; tile < nq; tile += w.step) {
        float v[U][4];
        load_tile<T, i64, U>(x, tile, w.lane, nq, v);
#pragma unroll
        for (int u = 0; u < U; u++) {
            i64 q = tile + u * 32 + w.lane;
            u32 a = 0u;
#pragma unroll
            for (int j = 0; j < 4; j++) a = max(a, f_bits(v[u][j]) & 0x7FFFFFFFu);
            for (int off = lanes >> 1; off > 0; off >>= 1)
                a = max(a, __shfl_xor_sync(FULL, a, off));
            if (q < nq) {
                LbApply p = prepare_sym(effective_scale(S, scale_from_amax(S, bits_f(a), ts), ts),
                                        S.kind);
                float o[4];
                apply_sym4(F, p, v[u], o, (u64)(4 * q));
                Vec4<T>::store(y, 4 * q, o);
            }
        }
    }
}

// 2-D tiles (lowbit-quant `Granularity::PerTile`): the tensor, a batch of M × N matrices, to
// and from the tile-major work matrix the CPU engine uses (`Work::Tiles`): tile t of a matrix
// is row t of a [tiles, rows · cols] f32 matrix, element (i mod rows, j mod cols) of the tile
// at column (i mod rows) · cols + j mod cols; the positions of an edge tile's missing
// elements stay as the buffer was (zeros). The block kernels then run on that matrix with
// blocks of rows · cols, so stochastic-rounding indices are its positions, as on the CPU.
struct LbTiles {
    i64 n, m, ncols, rows, cols, grid_rows, grid_cols;
};

// The work-matrix position of element k, in index type I (u32 when every index of the tensor
// and of the work matrix fits: 32-bit divisions cost a fraction of 64-bit ones on a GPU).
template <typename I>
LB_D I tile_position(const LbTiles& t, I k) {
    I ncols = (I)t.ncols, m = (I)t.m, rows = (I)t.rows, cols = (I)t.cols;
    I j = k % ncols, r = k / ncols;
    I i = r % m, b = r / m;
    I group = (b * (I)t.grid_rows + i / rows) * (I)t.grid_cols + j / cols;
    return group * rows * cols + (i % rows) * cols + j % cols;
}

// Whether every index of the tensor and of its work matrix fits 32 bits.
LB_D bool tiles_fit_u32(const LbTiles& t) {
    i64 per_matrix = t.m * t.ncols;
    i64 matrices = per_matrix > 0 ? t.n / per_matrix : 0;
    i64 work = matrices * t.grid_rows * t.grid_cols * t.rows * t.cols;
    return t.n < ((i64)1 << 31) && work < ((i64)1 << 31);
}

template <typename T, typename I>
LB_D void tiles_gather_loop(const T* x, float* w, const LbTiles& t) {
    I n = (I)t.n, step = (I)gridDim.x * blockDim.x;
    for (I k = (I)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += step)
        w[tile_position<I>(t, k)] = Io<T>::load(x, (i64)k);
}

template <typename T, typename I>
LB_D void tiles_scatter_loop(const float* w, T* y, const LbTiles& t) {
    I n = (I)t.n, step = (I)gridDim.x * blockDim.x;
    for (I k = (I)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += step)
        Io<T>::store(y, (i64)k, w[tile_position<I>(t, k)]);
}

// The index type is chosen per launch (the branch is uniform across the grid); `wide` forces
// 64-bit indices (the tests' PlanOptions::wide_indices).
template <typename T>
LB_D void tiles_gather_impl(const T* x, float* w, LbTiles t, int wide) {
    if (!wide && tiles_fit_u32(t)) tiles_gather_loop<T, u32>(x, w, t);
    else tiles_gather_loop<T, u64>(x, w, t);
}

template <typename T>
LB_D void tiles_scatter_impl(const float* w, T* y, LbTiles t, int wide) {
    if (!wide && tiles_fit_u32(t)) tiles_scatter_loop<T, u32>(w, y, t);
    else tiles_scatter_loop<T, u64>(w, y, t);
}

// The element kernels: one entry point per path (P_*), dtype and index type, all with the
// same parameters (the host picks the name: kernel_plan's `apply`).
#define LB_APPLY_ENTRY(T, SUF, I, NAME, P)                                                      \
    extern "C" __global__ void LB_BOUNDS NAME##SUF##_##I(                                       \
        const T* x, T* y, LbGroups G, LbFormat F, LbScale S, const float* scales,                \
        const float* zeros, const float* ts, const u32* stats, const u32* tensor_amax,          \
        int from_stats, int mode, int quad) {                                                   \
        apply_impl<T, I, P>(x, y, G, F, S, scales, zeros, ts, stats, tensor_amax, from_stats,     \
                            mode, quad);                                                        \
    }

#define LB_INSTANTIATE(T, SUF)                                                                  \
    extern "C" __global__ void lb_tiles_gather_##SUF(const T* x, float* w, i64 n, i64 m,        \
                                                     i64 ncols, i64 rows, i64 cols,             \
                                                     i64 grid_rows, i64 grid_cols, int wide) {  \
        tiles_gather_impl<T>(x, w, LbTiles{n, m, ncols, rows, cols, grid_rows, grid_cols}, wide); \
    }                                                                                           \
    extern "C" __global__ void lb_tiles_scatter_##SUF(const float* w, T* y, i64 n, i64 m,       \
                                                      i64 ncols, i64 rows, i64 cols,            \
                                                      i64 grid_rows, i64 grid_cols, int wide) { \
        tiles_scatter_impl<T>(w, y, LbTiles{n, m, ncols, rows, cols, grid_rows, grid_cols}, wide); \
    }                                                                                           \
    extern "C" __global__ void LB_BOUNDS lb_reduce_##SUF##_u32(const T* x, LbGroups G, u32* st, int asym,   \
                                                     i64 per_warp, int quad) {                  \
        reduce_impl<T, u32>(x, G, st, asym, per_warp, quad);                                    \
    }                                                                                           \
    extern "C" __global__ void LB_BOUNDS lb_reduce_##SUF##_u64(const T* x, LbGroups G, u32* st, int asym,   \
                                                     i64 per_warp, int quad) {                  \
        reduce_impl<T, u64>(x, G, st, asym, per_warp, quad);                                    \
    }                                                                                           \
    LB_APPLY_ENTRY(T, SUF, u32, lb_apply_, P_ANY)                                               \
    LB_APPLY_ENTRY(T, SUF, u64, lb_apply_, P_ANY)                                               \
    LB_APPLY_ENTRY(T, SUF, u32, lb_cast_, P_CAST)                                               \
    LB_APPLY_ENTRY(T, SUF, u64, lb_cast_, P_CAST)                                               \
    LB_APPLY_ENTRY(T, SUF, u32, lb_apply_sym_, P_SYM)                                           \
    LB_APPLY_ENTRY(T, SUF, u64, lb_apply_sym_, P_SYM)                                           \
    extern "C" __global__ void lb_amax_##SUF(const T* x, i64 n, u32* st, int vec) {              \
        amax_impl<T>(x, n, st, vec);                                                            \
    }                                                                                           \
    extern "C" __global__ void LB_FUSED_BOUNDS lb_fused_block_##SUF(const T* x, T* y, i64 n, int lanes,          \
                                                    LbFormat F, LbScale S,                      \
                                                    const u32* tensor_amax) {                   \
        fused_block_impl<T>(x, y, n, lanes, F, S, tensor_amax);                                 \
    }

LB_INSTANTIATE(float, f32)
// LB_ONLY_F32: a smaller module for timing experiments (docs/cuda.md, "Tuning the kernels").
#ifndef LB_ONLY_F32
LB_INSTANTIATE(F16, f16)
LB_INSTANTIATE(BF16, bf16)
#endif
