// cuda_fp16.h for the lowbit kernel emulator: found before the CUDA toolkit's header through
// `-I kernels/emulator`. Only what the kernels use: the __half storage type, its bit casts and
// the f16 <-> f32 conversions, computed here with integer operations exactly as the GPU's
// cvt.f32.f16 / cvt.rn.f16.f32 do (no _Float16 or F16C, whose NaN rules differ):
//
//   __half2float      exact; any NaN -> 0x7FFFFFFF (the GPU's canonical f32 NaN)
//   __float2half_rn   round to nearest even, overflow -> +-inf, any NaN -> 0x7FFF
//
// selftest.py checks both against independent references (all 65536 halves; a sweep of f32
// bit patterns around every rounding boundary).
#pragma once

#include "cuda_host.h"

// 16-bit storage; CUDA's __half is a class with the same size and alignment.
struct __half {
    unsigned short __x;
};
static_assert(sizeof(__half) == 2 && alignof(__half) == 2, "__half layout");

namespace lb_emu {

// f16 bits -> f32 bits, exact.
inline unsigned int f16_bits_to_f32_bits(unsigned short h) {
    const unsigned int sign = (static_cast<unsigned int>(h) & 0x8000u) << 16;
    const unsigned int exp = (static_cast<unsigned int>(h) >> 10) & 0x1Fu;
    const unsigned int man = static_cast<unsigned int>(h) & 0x3FFu;
    if (exp == 0x1Fu) return man != 0u ? kCanonicalNanF32 : (sign | 0x7F800000u); // NaN / inf
    if (exp != 0u) return sign | ((exp + (127u - 15u)) << 23) | (man << 13);    // normal
    if (man == 0u) return sign;                                                  // +-0
    // Subnormal: man * 2^-24 with the leading one at bit p (0..9) is 2^(p-24) * 1.fraction.
    const unsigned int p = 31u - static_cast<unsigned int>(__builtin_clz(man));
    const unsigned int fraction = (man << (23u - p)) & 0x7FFFFFu;
    return sign | ((p + 127u - 24u) << 23) | fraction;
}

// f32 bits -> f16 bits, round to nearest even.
inline unsigned short f32_bits_to_f16_bits(unsigned int b) {
    const unsigned int sign = (b >> 16) & 0x8000u;
    const unsigned int a = b & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return 0x7FFFu; // NaN: the GPU's canonical f16 NaN
    // 65520 = 65504 + half an ulp: the tie rounds to the even neighbour, 65536 (inf).
    if (a >= 0x477FF000u) return static_cast<unsigned short>(sign | 0x7C00u);
    if (a >= 0x38800000u) {
        // Normal half (|x| >= 2^-14): rebias the exponent and drop 13 mantissa bits; a carry
        // out of the mantissa correctly bumps the exponent.
        unsigned int h = ((a >> 23) - (127u - 15u)) << 10 | ((a >> 13) & 0x3FFu);
        const unsigned int rest = a & 0x1FFFu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u) != 0u)) h++;
        return static_cast<unsigned short>(sign | h);
    }
    // Below 2^-25 everything rounds to zero (2^-25 itself is a tie with 0, which is even).
    if (a <= 0x33000000u) return static_cast<unsigned short>(sign);
    // Subnormal half: the value in units of 2^-24 is mant * 2^(e - 150 + 24), e = 102..112.
    const unsigned int e = a >> 23;
    const unsigned int mant = (a & 0x7FFFFFu) | 0x800000u;
    const unsigned int shift = 126u - e; // 14..24
    unsigned int h = mant >> shift;
    const unsigned int rest = mant & ((1u << shift) - 1u);
    const unsigned int halfway = 1u << (shift - 1u);
    if (rest > halfway || (rest == halfway && (h & 1u) != 0u)) h++; // may carry into 0x400
    return static_cast<unsigned short>(sign | h);
}

} // namespace lb_emu

inline __half __ushort_as_half(unsigned short b) {
    __half h;
    h.__x = b;
    return h;
}
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __short_as_half(short b) { return __ushort_as_half(static_cast<unsigned short>(b)); }
inline short __half_as_short(__half h) { return static_cast<short>(h.__x); }

inline float __half2float(__half h) {
    return lb_emu::bit_cast<float>(lb_emu::f16_bits_to_f32_bits(h.__x));
}
inline __half __float2half_rn(float f) {
    return __ushort_as_half(lb_emu::f32_bits_to_f16_bits(lb_emu::bit_cast<unsigned int>(f)));
}
inline __half __float2half(float f) { return __float2half_rn(f); }
