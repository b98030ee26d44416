// cuda_host.h: the CUDA device dialect on the host, for the lowbit kernel emulator.
//
// Force-included (`-include cuda_host.h`) ahead of kernels/fake_quant.cu so that its exact
// source compiles as ordinary C++17 and runs on the CPU (see emulator.cpp for the scheduler
// that gives the warp-synchronous semantics):
//
//   * execution-space keywords (__global__, __device__, ...) expand to nothing or to their
//     GCC equivalents;
//   * threadIdx / blockIdx / blockDim / gridDim are plain globals that the scheduler sets
//     every time it resumes a lane;
//   * vector types (float4, uint2, ...) have CUDA's size and alignment;
//   * the IEEE intrinsics (__fmul_rn, ...) and the f32 math functions the kernels may call
//     round as the GPU does (IEEE round-to-nearest-even, subnormals kept) and return the
//     GPU's canonical NaN, 0x7FFFFFFF (f32) / 0x7FFFFFFFFFFFFFFF (f64), where the result is
//     NaN; the x86 rules (quieted operand payload, 0xFFC00000 default NaN) never leak out;
//   * warp collectives (__shfl_sync, __ballot_sync, __reduce_max_sync, ...) suspend the
//     calling lane's fiber until the 32 lanes of its warp have all arrived (emulator.cpp);
//     only the full mask 0xFFFFFFFF is supported, anything else is reported as a fault;
//   * atomics are plain read-modify-write operations: the emulator runs one lane at a time
//     on a single OS thread.
//
// Not emulated: shared memory (`__shared__` is deliberately left undefined, so a kernel that
// uses it fails to compile), block barriers (__syncthreads reports a fault), inline PTX, and
// the NaN rules of plain `a * b` / `a + b` operators written in kernel code (those follow
// x86; the kernels use the __f*_rn intrinsics wherever NaN bits matter). __CUDA_ARCH__ is not
// defined: code under `#ifdef __CUDA_ARCH__` is usually inline PTX that cannot run here.
//
// Compile with -ffp-contract=off and without -ffast-math (checked below and at run time).
#pragma once

#if !defined(__cplusplus) || __cplusplus < 201703L
#error "cuda_host.h needs C++17"
#endif
#if defined(__FAST_MATH__)
#error "cuda_host.h: -ffast-math breaks IEEE arithmetic; build the emulator without it"
#endif

// ---- host headers ---------------------------------------------------------------------------
// Every standard or system header the emulator uses is included here, BEFORE the keyword
// macros below: system headers spell attributes such as __attribute__((__noinline__)) and
// would break if included after `#define __noinline__`. Add new headers to this list.
#include <algorithm>
#include <cerrno>
#include <cfenv>
#include <cfloat>
#include <cmath>
#include <csignal>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#if FLT_EVAL_METHOD != 0
#error "cuda_host.h: float expressions must be evaluated in float (SSE, not x87 excess precision)"
#endif

// ---- execution-space and optimisation keywords ------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
// __restrict__ is a GCC / Clang keyword already (redefining a keyword draws warnings), and
// `#pragma unroll` needs no definition (build with -Wno-unknown-pragmas).

// ---- thread and block indices -----------------------------------------------------------------
struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
        : x(vx), y(vy), z(vz) {}
};

// Set by the emulator's scheduler whenever it resumes a lane (never written by kernels).
inline uint3 threadIdx = {0, 0, 0};
inline uint3 blockIdx = {0, 0, 0};
inline dim3 blockDim;
inline dim3 gridDim;
constexpr int warpSize = 32;

// ---- vector types (CUDA sizes and alignments) -------------------------------------------------
#define LB_EMU_VEC2(name, T, align)                                                             \
    struct alignas(align) name {                                                                \
        T x, y;                                                                                 \
    };                                                                                          \
    inline name make_##name(T x, T y) { return name{x, y}; }
#define LB_EMU_VEC4(name, T, align)                                                             \
    struct alignas(align) name {                                                                \
        T x, y, z, w;                                                                           \
    };                                                                                          \
    inline name make_##name(T x, T y, T z, T w) { return name{x, y, z, w}; }

LB_EMU_VEC2(float2, float, 8)
LB_EMU_VEC4(float4, float, 16)
LB_EMU_VEC2(double2, double, 16)
LB_EMU_VEC2(int2, int, 8)
LB_EMU_VEC4(int4, int, 16)
LB_EMU_VEC2(uint2, unsigned int, 8)
LB_EMU_VEC4(uint4, unsigned int, 16)
LB_EMU_VEC2(ushort2, unsigned short, 4)
LB_EMU_VEC4(ushort4, unsigned short, 8)
LB_EMU_VEC4(char4, signed char, 4)
LB_EMU_VEC4(uchar4, unsigned char, 4)
LB_EMU_VEC2(longlong2, long long, 16)
LB_EMU_VEC2(ulonglong2, unsigned long long, 16)
#undef LB_EMU_VEC2
#undef LB_EMU_VEC4

static_assert(sizeof(float4) == 16 && alignof(float4) == 16, "float4 layout");
static_assert(sizeof(uint2) == 8 && alignof(uint2) == 8, "uint2 layout");
static_assert(sizeof(ushort4) == 8 && alignof(ushort4) == 8, "ushort4 layout");

// ---- the emulator runtime (defined in emulator.cpp) -------------------------------------------
namespace lb_emu {

// Warp-wide operations; the names the emulator reports are in emulator.cpp (op_name).
enum class Op : unsigned char {
    Shfl,
    ShflUp,
    ShflDown,
    ShflXor,
    All,
    Any,
    Ballot,
    ReduceAdd,
    ReduceMin,
    ReduceMax,
    ReduceAnd,
    ReduceOr,
    ReduceXor,
    ReduceAddSigned,
    ReduceMinSigned,
    ReduceMaxSigned,
    SyncWarp,
};

// Suspends the calling lane until all 32 lanes of its warp reached a warp operation, then
// returns this lane's result. `value` holds the lane's operand (zero-extended, `size` bytes),
// `arg` the source lane / delta / lane mask of a shuffle, `width` its segment width.
unsigned long long warp_op(Op op, unsigned mask, unsigned long long value, unsigned size, int arg,
                           int width, const char* file, int line);

// Reports a fault of the running kernel (with its block, warp and lane) and exits.
[[noreturn]] void device_fault(const char* what, const char* file, int line);

template <typename To, typename From> inline To bit_cast(const From& from) {
    static_assert(sizeof(To) == sizeof(From), "bit_cast between types of different sizes");
    To to;
    std::memcpy(&to, &from, sizeof(To));
    return to;
}

// The GPU's canonical NaNs.
constexpr unsigned int kCanonicalNanF32 = 0x7FFFFFFFu;
constexpr unsigned long long kCanonicalNanF64 = 0x7FFFFFFFFFFFFFFFull;

inline float canon(float r) { return r != r ? bit_cast<float>(kCanonicalNanF32) : r; }
inline double canon(double r) { return r != r ? bit_cast<double>(kCanonicalNanF64) : r; }

// fminf / fmaxf as PTX min.f32 / max.f32 define them: a NaN operand is ignored, two NaNs give
// the canonical NaN, otherwise `a < b ? a : b` (so equal operands, e.g. -0 and +0, give b).
inline float gpu_fminf(float a, float b) {
    if (a != a) return b != b ? bit_cast<float>(kCanonicalNanF32) : b;
    if (b != b) return a;
    return a < b ? a : b;
}
inline float gpu_fmaxf(float a, float b) {
    if (a != a) return b != b ? bit_cast<float>(kCanonicalNanF32) : b;
    if (b != b) return a;
    return a > b ? a : b;
}
inline double gpu_fmin(double a, double b) {
    if (a != a) return b != b ? bit_cast<double>(kCanonicalNanF64) : b;
    if (b != b) return a;
    return a < b ? a : b;
}
inline double gpu_fmax(double a, double b) {
    if (a != a) return b != b ? bit_cast<double>(kCanonicalNanF64) : b;
    if (b != b) return a;
    return a > b ? a : b;
}

// Float -> integer conversions as PTX cvt does them: rounded per `mode` (0 nearest-even,
// 1 toward zero, 2 down, 3 up), saturated to the integer range, NaN -> 0.
template <typename I, typename F> inline I gpu_to_int(F x, int mode) {
    if (x != x) return I(0);
    const F r = mode == 0   ? std::nearbyint(x)
                : mode == 1 ? std::trunc(x)
                : mode == 2 ? std::floor(x)
                            : std::ceil(x);
    constexpr I lo = std::numeric_limits<I>::min(), hi = std::numeric_limits<I>::max();
    // (F)lo is exact (0 or a power of two); (F)hi is exact or rounds up to the next power of
    // two, which is out of range: either way `r >= (F)hi` means saturate.
    if (r <= static_cast<F>(lo)) return lo;
    if (r >= static_cast<F>(hi)) return hi;
    return static_cast<I>(r);
}

} // namespace lb_emu

// ---- f32 math functions with GPU NaN results --------------------------------------------------
// The host's libm gives the same values for numbers (these are exact or correctly rounded on
// both sides) but other NaN bit patterns; the GPU returns its canonical NaN. Function-like
// macros, so they cannot touch the declarations in the (already included) system headers.
#define rintf(x) lb_emu::canon(std::rint(static_cast<float>(x)))
#define nearbyintf(x) lb_emu::canon(std::nearbyint(static_cast<float>(x)))
#define roundf(x) lb_emu::canon(std::round(static_cast<float>(x)))
#define truncf(x) lb_emu::canon(std::trunc(static_cast<float>(x)))
#define floorf(x) lb_emu::canon(std::floor(static_cast<float>(x)))
#define ceilf(x) lb_emu::canon(std::ceil(static_cast<float>(x)))
#define sqrtf(x) lb_emu::canon(std::sqrt(static_cast<float>(x)))
#define fmaf(a, b, c)                                                                           \
    lb_emu::canon(std::fma(static_cast<float>(a), static_cast<float>(b), static_cast<float>(c)))
#define fminf(a, b) lb_emu::gpu_fminf(static_cast<float>(a), static_cast<float>(b))
#define fmaxf(a, b) lb_emu::gpu_fmaxf(static_cast<float>(a), static_cast<float>(b))

// ---- IEEE intrinsics (round to nearest even, subnormals kept, canonical NaN) ------------------
inline float __fadd_rn(float a, float b) { return lb_emu::canon(a + b); }
inline float __fsub_rn(float a, float b) { return lb_emu::canon(a - b); }
inline float __fmul_rn(float a, float b) { return lb_emu::canon(a * b); }
inline float __fdiv_rn(float a, float b) { return lb_emu::canon(a / b); }
inline float __frcp_rn(float a) { return lb_emu::canon(1.0f / a); }
inline float __fsqrt_rn(float a) { return lb_emu::canon(std::sqrt(a)); }
inline float __fmaf_rn(float a, float b, float c) { return lb_emu::canon(std::fma(a, b, c)); }
inline double __dadd_rn(double a, double b) { return lb_emu::canon(a + b); }
inline double __dsub_rn(double a, double b) { return lb_emu::canon(a - b); }
inline double __dmul_rn(double a, double b) { return lb_emu::canon(a * b); }
inline double __ddiv_rn(double a, double b) { return lb_emu::canon(a / b); }
inline double __drcp_rn(double a) { return lb_emu::canon(1.0 / a); }
inline double __dsqrt_rn(double a) { return lb_emu::canon(std::sqrt(a)); }
inline double __fma_rn(double a, double b, double c) { return lb_emu::canon(std::fma(a, b, c)); }
// Clamp to [0, 1]; NaN -> 0.
inline float __saturatef(float a) {
    return a != a ? 0.0f : (a < 0.0f ? 0.0f : (a > 1.0f ? 1.0f : a));
}

// ---- conversions --------------------------------------------------------------------------------
inline float __uint_as_float(unsigned int b) { return lb_emu::bit_cast<float>(b); }
inline unsigned int __float_as_uint(float f) { return lb_emu::bit_cast<unsigned int>(f); }
inline float __int_as_float(int b) { return lb_emu::bit_cast<float>(b); }
inline int __float_as_int(float f) { return lb_emu::bit_cast<int>(f); }
inline double __longlong_as_double(long long b) { return lb_emu::bit_cast<double>(b); }
inline long long __double_as_longlong(double d) { return lb_emu::bit_cast<long long>(d); }

#define LB_EMU_F2I(name, I, F, mode)                                                            \
    inline I name(F x) { return lb_emu::gpu_to_int<I, F>(x, mode); }
#define LB_EMU_F2I_ALL(prefix, I, F)                                                            \
    LB_EMU_F2I(prefix##_rn, I, F, 0)                                                            \
    LB_EMU_F2I(prefix##_rz, I, F, 1)                                                            \
    LB_EMU_F2I(prefix##_rd, I, F, 2)                                                            \
    LB_EMU_F2I(prefix##_ru, I, F, 3)
LB_EMU_F2I_ALL(__float2int, int, float)
LB_EMU_F2I_ALL(__float2uint, unsigned int, float)
LB_EMU_F2I_ALL(__float2ll, long long, float)
LB_EMU_F2I_ALL(__float2ull, unsigned long long, float)
LB_EMU_F2I_ALL(__double2int, int, double)
LB_EMU_F2I_ALL(__double2uint, unsigned int, double)
LB_EMU_F2I_ALL(__double2ll, long long, double)
LB_EMU_F2I_ALL(__double2ull, unsigned long long, double)
#undef LB_EMU_F2I_ALL
#undef LB_EMU_F2I
// Integer -> float, round to nearest even (the host's conversion).
inline float __int2float_rn(int i) { return static_cast<float>(i); }
inline float __uint2float_rn(unsigned int i) { return static_cast<float>(i); }
inline float __ll2float_rn(long long i) { return static_cast<float>(i); }
inline float __ull2float_rn(unsigned long long i) { return static_cast<float>(i); }
inline double __int2double_rn(int i) { return static_cast<double>(i); }
inline double __uint2double_rn(unsigned int i) { return static_cast<double>(i); }

// ---- integer intrinsics -------------------------------------------------------------------------
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned int>(x)); }
inline int __clzll(long long x) {
    return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x));
}
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned int __brev(unsigned int x) {
    unsigned int r = 0;
    for (int i = 0; i < 32; i++) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
inline unsigned long long __brevll(unsigned long long x) {
    return (static_cast<unsigned long long>(__brev(static_cast<unsigned int>(x))) << 32) |
           __brev(static_cast<unsigned int>(x >> 32));
}
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return static_cast<unsigned int>((static_cast<unsigned long long>(a) * b) >> 32);
}
inline int __mulhi(int a, int b) {
    return static_cast<int>((static_cast<long long>(a) * b) >> 32);
}
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline long long __mul64hi(long long a, long long b) {
    return static_cast<long long>((static_cast<__int128>(a) * b) >> 64);
}

// ---- min / max (CUDA's overload set: same-type, mixed signed/unsigned, float, double) -----------
#define LB_EMU_MINMAX(R, A, B)                                                                  \
    inline R min(A a, B b) {                                                                    \
        return static_cast<R>(a) < static_cast<R>(b) ? static_cast<R>(a) : static_cast<R>(b);   \
    }                                                                                           \
    inline R max(A a, B b) {                                                                    \
        return static_cast<R>(a) > static_cast<R>(b) ? static_cast<R>(a) : static_cast<R>(b);   \
    }
LB_EMU_MINMAX(int, int, int)
LB_EMU_MINMAX(unsigned int, unsigned int, unsigned int)
LB_EMU_MINMAX(unsigned int, int, unsigned int)
LB_EMU_MINMAX(unsigned int, unsigned int, int)
LB_EMU_MINMAX(long, long, long)
LB_EMU_MINMAX(unsigned long, unsigned long, unsigned long)
LB_EMU_MINMAX(unsigned long, long, unsigned long)
LB_EMU_MINMAX(unsigned long, unsigned long, long)
LB_EMU_MINMAX(long long, long long, long long)
LB_EMU_MINMAX(unsigned long long, unsigned long long, unsigned long long)
LB_EMU_MINMAX(unsigned long long, long long, unsigned long long)
LB_EMU_MINMAX(unsigned long long, unsigned long long, long long)
#undef LB_EMU_MINMAX
inline float min(float a, float b) { return lb_emu::gpu_fminf(a, b); }
inline float max(float a, float b) { return lb_emu::gpu_fmaxf(a, b); }
inline double min(double a, double b) { return lb_emu::gpu_fmin(a, b); }
inline double max(double a, double b) { return lb_emu::gpu_fmax(a, b); }
inline double min(float a, double b) { return lb_emu::gpu_fmin(a, b); }
inline double max(float a, double b) { return lb_emu::gpu_fmax(a, b); }
inline double min(double a, float b) { return lb_emu::gpu_fmin(a, b); }
inline double max(double a, float b) { return lb_emu::gpu_fmax(a, b); }

// ---- cache-hinted loads and stores (plain accesses on the host) ---------------------------------
template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline T __ldca(const T* p) { return *p; }
template <typename T> inline T __ldcg(const T* p) { return *p; }
template <typename T> inline T __ldcs(const T* p) { return *p; }
template <typename T> inline T __ldlu(const T* p) { return *p; }
template <typename T> inline T __ldcv(const T* p) { return *p; }
template <typename T> inline void __stwb(T* p, T v) { *p = v; }
template <typename T> inline void __stcg(T* p, T v) { *p = v; }
template <typename T> inline void __stcs(T* p, T v) { *p = v; }
template <typename T> inline void __stwt(T* p, T v) { *p = v; }

// ---- atomics (one lane runs at a time: a plain read-modify-write is atomic) ---------------------
#define LB_EMU_ATOMIC(name, T, expr)                                                            \
    inline T name(T* address, T val) {                                                          \
        T old = *address;                                                                       \
        *address = (expr);                                                                      \
        return old;                                                                             \
    }
#define LB_EMU_ATOMIC_INT(T)                                                                    \
    LB_EMU_ATOMIC(atomicAdd, T, static_cast<T>(old + val))                                      \
    LB_EMU_ATOMIC(atomicSub, T, static_cast<T>(old - val))                                      \
    LB_EMU_ATOMIC(atomicExch, T, val)                                                           \
    LB_EMU_ATOMIC(atomicMin, T, val < old ? val : old)                                          \
    LB_EMU_ATOMIC(atomicMax, T, val > old ? val : old)                                          \
    LB_EMU_ATOMIC(atomicAnd, T, static_cast<T>(old & val))                                      \
    LB_EMU_ATOMIC(atomicOr, T, static_cast<T>(old | val))                                       \
    LB_EMU_ATOMIC(atomicXor, T, static_cast<T>(old ^ val))                                      \
    inline T atomicCAS(T* address, T compare, T val) {                                          \
        T old = *address;                                                                       \
        if (old == compare) *address = val;                                                     \
        return old;                                                                             \
    }
LB_EMU_ATOMIC_INT(int)
LB_EMU_ATOMIC_INT(unsigned int)
LB_EMU_ATOMIC_INT(long long)
LB_EMU_ATOMIC_INT(unsigned long long)
#undef LB_EMU_ATOMIC_INT
#undef LB_EMU_ATOMIC
// atomicInc / atomicDec: CUDA's wrapping counters.
inline unsigned int atomicInc(unsigned int* address, unsigned int val) {
    unsigned int old = *address;
    *address = old >= val ? 0u : old + 1u;
    return old;
}
inline unsigned int atomicDec(unsigned int* address, unsigned int val) {
    unsigned int old = *address;
    *address = (old == 0u || old > val) ? val : old - 1u;
    return old;
}
// f32 atomic add: PTX atom.add.f32 rounds to nearest even and flushes subnormal inputs and
// results to sign-preserving zero.
inline float atomicAdd(float* address, float val) {
    auto ftz = [](float v) {
        return std::fpclassify(v) == FP_SUBNORMAL ? std::copysign(0.0f, v) : v;
    };
    float old = *address;
    *address = ftz(lb_emu::canon(ftz(old) + ftz(val)));
    return old;
}
inline double atomicAdd(double* address, double val) {
    double old = *address;
    *address = lb_emu::canon(old + val);
    return old;
}

// ---- warp collectives -------------------------------------------------------------------------
// The trailing defaulted `file` / `line` parameters record the call site for error messages.
namespace lb_emu {
template <typename T> inline unsigned long long to_lane_bits(T v) {
    static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8,
                  "warp shuffles move values of at most 8 bytes");
    unsigned long long b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T> inline T from_lane_bits(unsigned long long b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}
template <typename T>
inline T shuffle(Op op, unsigned mask, T var, int arg, int width, const char* file, int line) {
    return from_lane_bits<T>(
        warp_op(op, mask, to_lane_bits(var), sizeof(T), arg, width, file, line));
}
} // namespace lb_emu

template <typename T>
inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize,
                     const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return lb_emu::shuffle(lb_emu::Op::Shfl, mask, var, srcLane, width, file, line);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned int delta, int width = warpSize,
                        const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return lb_emu::shuffle(lb_emu::Op::ShflUp, mask, var, static_cast<int>(delta), width, file,
                           line);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned int delta, int width = warpSize,
                          const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return lb_emu::shuffle(lb_emu::Op::ShflDown, mask, var, static_cast<int>(delta), width, file,
                           line);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize,
                         const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return lb_emu::shuffle(lb_emu::Op::ShflXor, mask, var, laneMask, width, file, line);
}

inline int __all_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
    return static_cast<int>(
        lb_emu::warp_op(lb_emu::Op::All, mask, predicate != 0, 4, 0, warpSize, file, line));
}
inline int __any_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
    return static_cast<int>(
        lb_emu::warp_op(lb_emu::Op::Any, mask, predicate != 0, 4, 0, warpSize, file, line));
}
inline unsigned int __ballot_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                                  int line = __builtin_LINE()) {
    return static_cast<unsigned int>(
        lb_emu::warp_op(lb_emu::Op::Ballot, mask, predicate != 0, 4, 0, warpSize, file, line));
}

#define LB_EMU_REDUCE(name, T, op)                                                              \
    inline T name(unsigned mask, T value, const char* file = __builtin_FILE(),                  \
                  int line = __builtin_LINE()) {                                                \
        return static_cast<T>(lb_emu::warp_op(lb_emu::Op::op, mask,                             \
                                              static_cast<unsigned int>(value), 4, 0, warpSize, \
                                              file, line));                                     \
    }
LB_EMU_REDUCE(__reduce_add_sync, unsigned int, ReduceAdd)
LB_EMU_REDUCE(__reduce_min_sync, unsigned int, ReduceMin)
LB_EMU_REDUCE(__reduce_max_sync, unsigned int, ReduceMax)
LB_EMU_REDUCE(__reduce_and_sync, unsigned int, ReduceAnd)
LB_EMU_REDUCE(__reduce_or_sync, unsigned int, ReduceOr)
LB_EMU_REDUCE(__reduce_xor_sync, unsigned int, ReduceXor)
LB_EMU_REDUCE(__reduce_add_sync, int, ReduceAddSigned)
LB_EMU_REDUCE(__reduce_min_sync, int, ReduceMinSigned)
LB_EMU_REDUCE(__reduce_max_sync, int, ReduceMaxSigned)
#undef LB_EMU_REDUCE

inline void __syncwarp(unsigned mask = 0xFFFFFFFFu, const char* file = __builtin_FILE(),
                       int line = __builtin_LINE()) {
    lb_emu::warp_op(lb_emu::Op::SyncWarp, mask, 0, 4, 0, warpSize, file, line);
}

// Block barriers need every warp of the block to run concurrently (and usually shared
// memory): not emulated.
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    lb_emu::device_fault("__syncthreads is not supported by the emulator (warps run one after "
                         "another)",
                         file, line);
}
inline void __trap(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    lb_emu::device_fault("__trap() called", file, line);
}
