// lowbit device codec: a line-by-line mirror of the Rust scalar references.
//
// Every function names the Rust function it mirrors. They act on integer bit patterns with
// the same rounding and overflow rules; nothing here uses cuda_fp8.h / cuda_fp16.h
// conversions. Compiled with --fmad=false (no contraction of a*b+c), IEEE division and
// square root, and denormals kept (no -ftz), so f32 arithmetic is the CPU's.
#pragma once

typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

#define LB_D __device__ __forceinline__
// Out of line: the reference codec and the rare paths. The kernels unroll their fast path
// several times; one call instead of an inlined copy keeps each unrolled step small
// (registers, PTX size, the driver's JIT time).
#define LB_SLOW __device__ __noinline__

// ---- element format and conversion (lowbit_formats::{MiniFloat, IntFormat, Conversion}) ----

enum { ENC_IEEE = 0, ENC_FN = 1, ENC_FNUZ = 2, ENC_FINITE = 3, ENC_FNU = 4 };
enum { R_NEAREST_EVEN = 0, R_NEAREST_AWAY = 1, R_TOWARD_ZERO = 2, R_STOCHASTIC = 3 };

// The element format and conversion: what the reference codec reads. The first fields of
// the Rust `#[repr(C)] struct DevFormat` in src/kernel_plan/params.rs (same order).
struct LbCodec {
    int is_int;     // 0: minifloat, 1: integer
    int exp_bits;   // minifloat exponent bits
    int man_bits;   // minifloat mantissa bits
    int bias;       // minifloat bias
    int encoding;   // ENC_*
    int int_bits;   // integer width
    int int_min;    // integer smallest value
    int int_max;    // integer largest value
    int rounding;   // R_*
    int saturate;   // Overflow::Saturate
    u64 seed;       // stochastic-rounding seed
};

// Mirrors the Rust `#[repr(C)] struct DevFormat` in src/kernel_plan/params.rs (the same layout: the
// codec's fields, then the fast path's constants).
struct LbFormat {
    LbCodec c;
    // The nearest-even fast path (FloatLane::quantize_fast of lowbit-formats' lane.rs), set
    // by the host where the lane algorithm applies (nearest-even, bias <= 127, not E8M0).
    int fast;
    u32 sh;              // 23 - m
    u32 m_zero;          // m == 0: the kept bit is the implicit one
    u32 min_normal_bits; // f32 bits of the smallest normal
    u32 max_bits;        // f32 bits of the largest finite value
    float magic;         // 2^(emin - m + 23)
    int fnuz;            // a zero never carries a sign
    u32 ovf[2];          // results for finite overflow, [positive, negative]
    u32 inf[2];          // for +-inf
    u32 nan[2];          // for NaN
};

LB_D float bits_f(u32 b) { return __uint_as_float(b); }
LB_D u32 f_bits(float f) { return __float_as_uint(f); }
LB_D bool is_nan(float x) { return x != x; }

// The x86 rule for a NaN result (what the CPU reference produces): the first NaN operand,
// quieted; x86's default NaN 0xFFC00000 for an invalid operation (inf · 0). GPU arithmetic
// returns the canonical NaN instead and would lose the sign, which the minifloat encoders read.
LB_D float quieted(float a) { return bits_f(f_bits(a) | 0x00400000u); }
LB_D float x86_nan(float a, float b) {
    if (is_nan(a)) return quieted(a);
    if (is_nan(b)) return quieted(b);
    return bits_f(0xFFC00000u);
}

// a · b with the x86 NaN rule (a NaN operand makes a NaN product, so only NaN products look
// at the operands).
LB_D float mul(float a, float b) {
    float r = __fmul_rn(a, b);
    return is_nan(r) ? x86_nan(a, b) : r;
}

// lowbit_formats::stochastic_bits
LB_D u32 stochastic_bits(u64 seed, u64 index) {
    u64 z = seed + index * 0x9E3779B97F4A7C15ull + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (u32)(z >> 32);
}

// lowbit_formats::round_shift
LB_D u64 round_shift(u64 mant, u32 shift, int rounding, u32 rand) {
    if (shift == 0) return mant;
    if (shift > 56) shift = 56;
    switch (rounding) {
    case R_NEAREST_EVEN: {
        u64 bias = ((mant >> shift) & 1ull) + (1ull << (shift - 1)) - 1ull;
        return (mant + bias) >> shift;
    }
    case R_NEAREST_AWAY: return (mant + (1ull << (shift - 1))) >> shift;
    case R_TOWARD_ZERO: return mant >> shift;
    default: {
        u64 dropped = mant & ((1ull << shift) - 1ull);
        u64 frac32 = (dropped << 32) >> shift;
        return (mant >> shift) + (((u64)rand < frac32) ? 1ull : 0ull);
    }
    }
}

// minifloat::pow2_bits
LB_D u32 pow2_bits(int k) {
    return k >= -126 ? ((u32)(k + 127)) << 23 : 1u << (k + 149);
}

LB_D bool mf_signed(const LbCodec& f) { return f.encoding != ENC_FNU; }
LB_D u32 mf_magnitude_mask(const LbCodec& f) { return (1u << (f.exp_bits + f.man_bits)) - 1u; }
LB_D u32 mf_sign_bit(const LbCodec& f) {
    return mf_signed(f) ? 1u << (f.exp_bits + f.man_bits) : 0u;
}
// MiniFloat::max_magnitude_code
LB_D u32 mf_max_magnitude_code(const LbCodec& f) {
    u32 m = (u32)f.man_bits;
    switch (f.encoding) {
    case ENC_IEEE: return (((1u << f.exp_bits) - 2u) << m) | ((1u << m) - 1u);
    case ENC_FN:
    case ENC_FNU: return mf_magnitude_mask(f) - 1u;
    default: return mf_magnitude_mask(f);
    }
}
// MiniFloat::nan_code (0 where the format has none)
LB_D u32 mf_nan_bits_unsigned(const LbCodec& f) {
    u32 m = (u32)f.man_bits;
    switch (f.encoding) {
    case ENC_IEEE: return (((1u << f.exp_bits) - 1u) << m) | (1u << (m - 1u));
    case ENC_FN:
    case ENC_FNU: return mf_magnitude_mask(f);
    case ENC_FNUZ: return mf_sign_bit(f);
    default: return 0u;
    }
}
// MiniFloat::is_nan_code
LB_D bool mf_is_nan_code(const LbCodec& f, u32 code) {
    u32 mag = code & mf_magnitude_mask(f);
    switch (f.encoding) {
    case ENC_IEEE: return mag > (((1u << f.exp_bits) - 1u) << f.man_bits);
    case ENC_FN:
    case ENC_FNU: return mag == mf_magnitude_mask(f);
    case ENC_FNUZ: return code == mf_sign_bit(f);
    default: return false;
    }
}
// MiniFloat::is_inf_code
LB_D bool mf_is_inf_code(const LbCodec& f, u32 code) {
    return f.encoding == ENC_IEEE &&
           (code & mf_magnitude_mask(f)) == (((1u << f.exp_bits) - 1u) << f.man_bits);
}
// MiniFloat::overflow_code
LB_D u32 mf_overflow_code(const LbCodec& f, bool neg) {
    u32 sign = neg ? mf_sign_bit(f) : 0u;
    switch (f.encoding) {
    case ENC_IEEE: return sign | (((1u << f.exp_bits) - 1u) << f.man_bits);
    case ENC_FN: return sign | mf_magnitude_mask(f);
    case ENC_FNUZ: return mf_sign_bit(f);
    case ENC_FINITE: return sign | mf_max_magnitude_code(f);
    default: return mf_magnitude_mask(f);
    }
}

// MiniFloat::decode
LB_D float mf_decode(const LbCodec& f, u32 code) {
    u32 m = (u32)f.man_bits;
    code &= (mf_sign_bit(f) | mf_magnitude_mask(f));
    u32 sign = (code & mf_sign_bit(f)) ? 0x80000000u : 0u;
    if (mf_is_nan_code(f, code)) return bits_f(sign | 0x7FC00000u);
    if (mf_is_inf_code(f, code)) return bits_f(sign | 0x7F800000u);
    u32 mag = code & mf_magnitude_mask(f);
    int e = (int)(mag >> m);
    u32 fr = mag & ((1u << m) - 1u);
    u32 bits;
    if (f.encoding == ENC_FNU) {
        bits = pow2_bits(e - f.bias);
    } else if (e == 0) {
        float v = __fmul_rn((float)fr, bits_f(pow2_bits(1 - f.bias - (int)m)));
        bits = f_bits(v);
    } else {
        int fe = e - f.bias + 127;
        if (fe >= 1) {
            bits = (((u32)fe) << 23) | (fr << (23u - m));
        } else {
            float v = __fmul_rn((float)((1u << m) | fr), bits_f(pow2_bits(e - f.bias - (int)m)));
            bits = f_bits(v);
        }
    }
    return bits_f(sign | bits);
}

// MiniFloat::encode_with
LB_D u32 mf_encode(const LbCodec& f, float x, u32 rand) {
    u32 bits = f_bits(x);
    bool neg = (bits >> 31) != 0u;
    u32 a = bits & 0x7FFFFFFFu;
    bool sat = f.saturate != 0;
    u32 sign = neg ? mf_sign_bit(f) : 0u;
    u32 max = mf_max_magnitude_code(f);
    // 1. Non-finite inputs.
    if (a > 0x7F800000u) {
        switch (f.encoding) {
        case ENC_IEEE:
        case ENC_FN: return sign | mf_nan_bits_unsigned(f);
        case ENC_FNUZ: return mf_sign_bit(f);
        case ENC_FINITE: return neg ? 0u : mf_sign_bit(f);
        default: return mf_magnitude_mask(f);
        }
    }
    if (a == 0x7F800000u) {
        if (sat) return (neg && !mf_signed(f)) ? 0u : (sign | max);
        return mf_overflow_code(f, neg);
    }
    // 2. Zero.
    if (a == 0u) {
        switch (f.encoding) {
        case ENC_FNU: return sat ? 0u : mf_magnitude_mask(f);
        case ENC_FNUZ: return 0u;
        default: return sign;
        }
    }
    if (neg && !mf_signed(f)) return sat ? 0u : mf_magnitude_mask(f);
    if (f.encoding == ENC_FNU && a == pow2_bits(-f.bias)) return 0u;
    // 3. Normalise.
    int e = (int)(a >> 23);
    u32 fr = a & 0x7FFFFFu;
    int unbiased;
    u32 mant;
    if (e != 0) {
        unbiased = e - 127;
        mant = fr | 0x800000u;
    } else {
        int k = __clz(fr) - 8;
        unbiased = -126 - k;
        mant = fr << k;
    }
    // 4.-5. Align to the target and round.
    int m = f.man_bits;
    int target = unbiased + f.bias - 1;
    int denormal = target < 0 ? -target : 0;
    u32 shift = (u32)(23 - m + denormal);
    u64 r = round_shift((u64)mant, shift, f.rounding, rand);
    // 6. Pack.
    u64 packed = r + (((u64)(target > 0 ? target : 0)) << m);
    // 7. Overflow.
    if (packed > (u64)max) return sat ? (sign | max) : mf_overflow_code(f, neg);
    u32 p = (u32)packed;
    // 8. Sign.
    if (f.encoding == ENC_FNUZ && p == 0u) return 0u;
    return sign | p;
}

// IntFormat::round_value
// lowbit_formats::round_integer: x rounded to an integer value, not saturated (NaN stays NaN).
LB_D float int_round(const LbCodec& f, float x, u32 rand) {
    switch (f.rounding) {
    case R_NEAREST_EVEN: return rintf(x);
    case R_NEAREST_AWAY: return roundf(x);
    case R_TOWARD_ZERO: return truncf(x);
    default: {
        float fl = floorf(x);
        float frac = __fsub_rn(x, fl);
        double d = __dmul_rn((double)frac, 4294967296.0);
        // Rust's `as u64` saturates and maps NaN (from ±inf inputs) to 0.
        u64 frac32 = (d != d || d <= 0.0) ? 0ull : (d >= 18446744073709551615.0 ? ~0ull : (u64)d);
        return ((u64)rand < frac32) ? __fadd_rn(fl, 1.0f) : fl;
    }
    }
}

// IntFormat::clamp: saturated to the format's range, f32::clamp then `+ 0.0` (−0 → +0).
LB_D float int_clamp(const LbCodec& f, float r) {
    float lo = (float)f.int_min, hi = (float)f.int_max;
    if (r < lo) r = lo;
    if (r > hi) r = hi;
    return __fadd_rn(r, 0.0f);
}

// IntFormat::round_value.
LB_D float int_round_value(const LbCodec& f, float x, u32 rand) {
    if (is_nan(x)) return 0.0f;
    return int_clamp(f, int_round(f, x, rand));
}

// FloatLane::quantize_fast (lane.rs): nearest-even rounding of the f32 bit pattern at bit
// 23 - m in the normal range, the magic-number addition below it, constants for overflow,
// +-inf and NaN. Equal to the reference wherever the host enables it (tested in lowbit-formats
// over all 2^32 inputs, and here against the golden tables).
LB_D float quantize_fast(const LbFormat& f, float x) {
    u32 b = f_bits(x);
    u32 a = b & 0x7FFFFFFFu;
    u32 s = b >> 31;
    u32 sh = f.sh;
    u32 lsb = ((a >> sh) & 1u) | f.m_zero;
    u32 normal = (a + lsb + (1u << (sh - 1u)) - 1u) & ~((1u << sh) - 1u);
    u32 sub = f_bits(__fsub_rn(__fadd_rn(bits_f(a), f.magic), f.magic));
    u32 r = a < f.min_normal_bits ? sub : normal;
    u32 sign = (f.fnuz && r == 0u) ? 0u : (b & 0x80000000u);
    u32 out = r | sign;
    // Constant indices only: a dynamic index would copy the parameter struct to local memory.
    if (r > f.max_bits) out = s ? f.ovf[1] : f.ovf[0];
    if (a == 0x7F800000u) out = s ? f.inf[1] : f.inf[0];
    if (a > 0x7F800000u) out = s ? f.nan[1] : f.nan[0];
    return bits_f(out);
}

// Format::quantize_with: decode(encode_with(x, conv, rand)), `index` numbers the element for
// stochastic rounding. The reference path, out of line.
LB_SLOW float quantize_ref(LbCodec f, float x, u64 index) {
    u32 rand = f.rounding == R_STOCHASTIC ? stochastic_bits(f.seed, index) : 0u;
    if (f.is_int) return int_round_value(f, x, rand);
    return mf_decode(f, mf_encode(f, x, rand));
}

// Format::quantize_with: the lane fast path where the host enabled it, else the reference.
LB_D float quantize_elem(const LbFormat& f, float x, u64 index) {
    if (f.fast) return quantize_fast(f, x);
    return quantize_ref(f.c, x, index);
}

// ---- scales (lowbit_quant::scale) ----

enum { SK_F32 = 0, SK_PO2 = 1, SK_E8M0 = 2, SK_NVFP4 = 3, SK_UNIT = 4, SK_E4M3 = 5 };
enum { PO2_FLOOR = 0, PO2_CEIL = 1, PO2_NEAREST = 2 };
enum { E8_FLOOR = 0, E8_CEIL = 1, E8_EVEN = 2, E8_RCEIL = 3 };
enum { E4_NEAREST = 0, E4_UP = 1 };

// Mirrors the Rust `#[repr(C)] struct DevScale` in src/kernel_plan/params.rs.
struct LbScale {
    int kind;        // SK_*
    int rounding;    // PO2_* / E8_* / E4_* by kind (E4_* for SK_NVFP4 and SK_E4M3)
    int emax;        // QuantSpec::element_emax
    int man_bits;    // QuantSpec::element_man_bits
    float max;       // QuantSpec::element_max
    float unit;      // QuantSpec::element_unit
    float nvfp4_div; // E4M3_MAX * format max (NVFP4 first level)
    int asym;        // asymmetric (integer zero point)
};

// spec::pow2
LB_D float pow2f(int k) {
    if (k > 127) return bits_f(0x7F800000u);
    if (k >= -126) return bits_f(((u32)(k + 127)) << 23);
    if (k >= -149) return bits_f(1u << (k + 149));
    return 0.0f;
}

// spec::exponent_of
LB_D int exponent_of(float x) {
    u32 a = f_bits(x) & 0x7FFFFFFFu;
    int e = (int)(a >> 23);
    return e != 0 ? e - 127 : 31 - __clz(a) - 149;
}

// scale::po2_exponent
LB_D int po2_exponent(double t, int rounding) {
    u64 bits = (u64)__double_as_longlong(t);
    int e = (int)((bits >> 52) & 0x7FFull) - 1023;
    u64 mant = bits & ((1ull << 52) - 1ull);
    switch (rounding) {
    case PO2_FLOOR: return e;
    case PO2_CEIL: return e + (mant != 0ull ? 1 : 0);
    default: {
        // t / 2^e, exactly: the mantissa with a zero exponent.
        double m = __longlong_as_double((long long)(mant | (1023ull << 52)));
        return e + (__dmul_rn(m, m) >= 2.0 ? 1 : 0);
    }
    }
}

LB_D float clamp_po2(int k) { return pow2f(k < -149 ? -149 : (k > 127 ? 127 : k)); }

LB_D bool is_finite(float x) { return (f_bits(x) & 0x7F800000u) != 0x7F800000u; }

// ScaleRule::e8m0
LB_D float scale_e8m0(const LbScale& s, float amax) {
    if (!is_finite(amax)) return bits_f(0x7FC00000u);
    if (amax == 0.0f) return pow2f(-127);
    float a = fabsf(amax);
    u32 ab = f_bits(a);
    int e;
    switch (s.rounding) {
    case E8_FLOOR: e = exponent_of(a) - s.emax; break;
    case E8_CEIL: {
        bool pw = (ab & 0x007FFFFFu) == 0u || ((ab >> 23) == 0u && (ab & (ab - 1u)) == 0u);
        e = exponent_of(a) + (pw ? 0 : 1) - s.emax;
        break;
    }
    case E8_EVEN: {
        u32 m = (u32)(s.man_bits < 22 ? s.man_bits : 22);
        u32 rounded = (ab + (1u << (22u - m))) & 0x7F800000u;
        e = rounded == 0u ? exponent_of(a) - s.emax : exponent_of(bits_f(rounded)) - s.emax;
        break;
    }
    default: e = po2_exponent(__ddiv_rn((double)a, (double)s.max), PO2_CEIL); break;
    }
    if (e > 127) return bits_f(0x7FC00000u);
    return pow2f(e < -127 ? -127 : e);
}

// scale::e4m3_nearest_normal
LB_D float e4m3_nearest_normal(float x) {
    u32 b = f_bits(x);
    return bits_f((b + 0x7FFFFu + ((b >> 20) & 1u)) & 0xFFF00000u);
}

// scale::nvfp4_block_scale
LB_D float nvfp4_block_scale(float block_amax, float max, float tensor_scale, int rounding) {
    float raw = __fdiv_rn(__fdiv_rn(block_amax, max), tensor_scale);
    if (is_nan(raw)) return bits_f(0x7FC00000u);
    float c = raw < 0.015625f ? 0.015625f : (raw > 448.0f ? 448.0f : raw);
    float near = e4m3_nearest_normal(c);
    if (rounding == E4_NEAREST || near >= c) return near;
    return bits_f(f_bits(near) + (1u << 20));
}

// scale::nvfp4_tensor_scale
LB_D float nvfp4_tensor_scale(const LbScale& s, float amax) {
    if (!is_finite(amax)) return bits_f(0x7FC00000u);
    if (amax == 0.0f) return 1.0f;
    float t = __fdiv_rn(amax, s.nvfp4_div);
    return t == 0.0f ? bits_f(1u) : t;
}

// ScaleRule::scale: the stored scale of a symmetric group with absolute maximum `amax`.
LB_D float scale_from_amax(const LbScale& s, float amax, float tensor_scale) {
    if (!is_finite(amax)) return bits_f(0x7FC00000u);
    switch (s.kind) {
    case SK_F32: {
        if (amax == 0.0f) return 1.0f;
        float q = __fdiv_rn(amax, s.max);
        return q == 0.0f ? bits_f(1u) : q;
    }
    case SK_PO2:
        if (amax == 0.0f) return 1.0f;
        return clamp_po2(po2_exponent(__ddiv_rn((double)amax, (double)s.max), s.rounding));
    case SK_E8M0: return scale_e8m0(s, amax);
    case SK_NVFP4: return nvfp4_block_scale(amax, s.max, tensor_scale, s.rounding);
    case SK_E4M3: return nvfp4_block_scale(amax, s.max, 1.0f, s.rounding);
    default: return 1.0f;
    }
}

// ScaleRule::effective
LB_D float effective_scale(const LbScale& s, float stored, float tensor_scale) {
    if (s.kind == SK_NVFP4) return __fmul_rn(tensor_scale, stored);
    return __fmul_rn(stored, s.unit);
}

// scale::affine_from_minmax (PyTorch's affine observer rule)
LB_D void affine_from_minmax(const LbScale& s, const LbCodec& f, float mn, float mx,
                             float* scale, float* zero) {
    if (!is_finite(mn) || !is_finite(mx)) {
        *scale = bits_f(0x7FC00000u);
        *zero = 0.0f;
        return;
    }
    float lo = fminf(mn, 0.0f), hi = fmaxf(mx, 0.0f);
    float qmin = (float)f.int_min, qmax = (float)f.int_max;
    float sc = __fdiv_rn(__fsub_rn(hi, lo), __fsub_rn(qmax, qmin));
    if (sc == 0.0f || !is_finite(sc)) sc = 1.0f;
    if (s.kind == SK_PO2) sc = clamp_po2(po2_exponent((double)sc, s.rounding));
    float z = __fsub_rn(qmin, rintf(__fdiv_rn(lo, sc)));
    if (z < qmin) z = qmin;
    if (z > qmax) z = qmax;
    *scale = sc;
    *zero = z;
}

// ---- applying a scale (lowbit_quant::engine) ----

#define LB_PRESCALE 18446744073709551616.0f // 2^64
#define LB_INV_PRESCALE 5.421010862427522e-20f // 2^-64

// a / b with the x86 NaN rule.
LB_D float div(float a, float b) {
    float r = __fdiv_rn(a, b);
    return is_nan(r) ? x86_nan(a, b) : r;
}

// A symmetric group's scale made ready once: the reciprocal, or the 2^64-prescaled pair for
// scales whose reciprocal does not fit f32 (engine::needs_prescale), or NaN; NVFP4 and E4M3
// scales divide instead (engine::divides: torchao's `x / s`).
struct LbApply {
    int mode;  // 0: q(x * inv) * eff; 1: NaN; 2: prescaled; 3: q(x / eff) * eff
    float eff;
    float inv;
    // eff (and inv, mode 0) finite and non-zero: a product or quotient with them is NaN only
    // for a NaN x (no inf · 0, 0 / 0, inf / inf), so the x86 NaN rule reduces to x quieted.
    int clean;
};

LB_D bool finite_nonzero(float x) { return is_finite(x) && x != 0.0f; }

LB_D LbApply prepare_sym(float eff, int kind = SK_F32) {
    LbApply p;
    p.eff = eff;
    p.inv = 0.0f;
    p.clean = 0;
    if (is_nan(eff)) {
        p.mode = 1;
        return p;
    }
    if (kind == SK_NVFP4 || kind == SK_E4M3) {
        p.mode = 3;
        p.clean = finite_nonzero(eff);
        return p;
    }
    u32 eb = f_bits(eff);
    // 1 / 2^k is exact for a positive power of two whose reciprocal is normal: 2^-k, the
    // division's result without the division (MX and power-of-two scales).
    if ((eb & 0x807FFFFFu) == 0u && eb >= 0x00800000u && eb <= 0x7E800000u) {
        p.mode = 0;
        p.inv = bits_f((254u - (eb >> 23)) << 23);
        p.clean = 1;
        return p;
    }
    bool normal = (eb & 0x7F800000u) != 0u && is_finite(eff);
    float inv = __fdiv_rn(1.0f, eff);
    bool prescale = !normal || !is_finite(inv);
    if (prescale && eff > 0.0f && is_finite(eff)) {
        p.mode = 2;
        p.eff = __fmul_rn(eff, LB_PRESCALE);
        p.inv = __fdiv_rn(1.0f, p.eff);
        return p;
    }
    p.mode = 0;
    p.inv = inv;
    p.clean = finite_nonzero(eff) && finite_nonzero(inv);
    return p;
}

// a · b and a / b for b finite and non-zero: the x86 NaN rule is then `a` quieted when a is
// NaN (GPU arithmetic would return the canonical NaN).
LB_D float quiet_nan_of(float a, float r) { return is_nan(a) ? quieted(a) : r; }
LB_D float mul_clean(float a, float b) { return quiet_nan_of(a, __fmul_rn(a, b)); }
LB_D float div_clean(float a, float b) { return quiet_nan_of(a, __fdiv_rn(a, b)); }

// The rare modes of apply_sym, out of line: a NaN scale, or the 2^64 prescale.
LB_SLOW float apply_sym_rare(LbFormat f, LbApply p, float x, u64 index) {
    if (p.mode == 1) return bits_f(0x7FC00000u);
    float q = mul(quantize_elem(f, mul(mul(x, LB_PRESCALE), p.inv), index), p.eff);
    return mul(q, LB_INV_PRESCALE);
}

// engine::fake_block / Codec::quantize_scaled_slice for one element: q(x · (1/s)) · s, with
// the 2^64 prescale for scales whose reciprocal does not fit f32 and NaN for a NaN scale;
// engine::divide_blocks for NVFP4 and E4M3 scales: q(x / s) · s.
LB_D float apply_sym(const LbFormat& f, const LbApply& p, float x, u64 index) {
    if (p.mode == 0) return mul(quantize_elem(f, mul(x, p.inv), index), p.eff);
    if (p.mode == 3) return mul(quantize_elem(f, div(x, p.eff), index), p.eff);
    return apply_sym_rare(f, p, x, index);
}

// apply_sym for 4 consecutive elements (work indices base..base+3) through the reference
// paths, out of line.
struct Quad {
    float v[4];
};
LB_SLOW Quad apply_sym4_slow(LbFormat f, LbApply p, Quad x, u64 base) {
    Quad r;
#pragma unroll
    for (int j = 0; j < 4; j++) r.v[j] = apply_sym(f, p, x.v[j], base + (u64)j);
    return r;
}

// apply_sym for 4 consecutive elements, the branch taken once for the quad: inline, for
// clean scales, the lane fast path with the reciprocal or the division and integers without
// stochastic rounding (IntFormat::round_value, a few instructions); everything else out of
// line.
LB_D void apply_sym4(const LbFormat& f, const LbApply& p, const float v[4], float o[4], u64 base) {
    if (f.fast && p.mode == 0 && p.clean) {
#pragma unroll
        for (int j = 0; j < 4; j++) o[j] = mul_clean(quantize_fast(f, mul_clean(v[j], p.inv)), p.eff);
    } else if (f.fast && p.mode == 3 && p.clean) {
#pragma unroll
        for (int j = 0; j < 4; j++) o[j] = mul_clean(quantize_fast(f, div_clean(v[j], p.eff)), p.eff);
    } else if (f.c.is_int && f.c.rounding != R_STOCHASTIC && p.mode == 0 && p.clean) {
#pragma unroll
        for (int j = 0; j < 4; j++)
            o[j] = mul_clean(int_round_value(f.c, mul_clean(v[j], p.inv), 0u), p.eff);
    } else {
        Quad r = apply_sym4_slow(f, p, Quad{{v[0], v[1], v[2], v[3]}}, base);
#pragma unroll
        for (int j = 0; j < 4; j++) o[j] = r.v[j];
    }
}

// engine::affine_fake_block for one element: (clamp(round(x · (1/s)) + z) − z) · s.
LB_D float fake_affine(const LbCodec& f, float x, float scale, float zero, u64 index) {
    float inv = div(1.0f, scale);
    u32 rand = f.rounding == R_STOCHASTIC ? stochastic_bits(f.seed, index) : 0u;
    // round(x · (1/s)) + z, the zero point after rounding (PyTorch; engine::affine_q).
    float q = __fadd_rn(int_round(f, mul(x, inv), rand), zero);
    q = is_nan(q) ? 0.0f : int_clamp(f, q);
    return mul(__fsub_rn(q, zero), scale);
}

// ---- f16 / bf16 <-> f32, as the `half` crate converts (NaN payloads kept, quiet bit set) ----

LB_D float f16_to_f32(unsigned short h) {
    u32 sign = ((u32)h & 0x8000u) << 16;
    if ((h & 0x7C00u) == 0x7C00u && (h & 0x03FFu) != 0u)
        return bits_f(sign | 0x7FC00000u | (((u32)h & 0x03FFu) << 13));
    return __half2float(__ushort_as_half(h));
}
LB_D unsigned short f32_to_f16(float x) {
    u32 b = f_bits(x);
    if ((b & 0x7FFFFFFFu) > 0x7F800000u)
        return (unsigned short)(((b & 0x80000000u) >> 16) | 0x7C00u | 0x0200u |
                                ((b & 0x007FFFFFu) >> 13));
    return __half_as_ushort(__float2half_rn(x));
}
LB_D float bf16_to_f32(unsigned short h) {
    if ((h & 0x7FFFu) > 0x7F80u) return bits_f(((u32)h | 0x0040u) << 16);
    return bits_f(((u32)h) << 16);
}
LB_D unsigned short f32_to_bf16(float x) {
    u32 b = f_bits(x);
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) return (unsigned short)((b >> 16) | 0x0040u);
    u32 round_bit = 0x00008000u;
    if ((b & round_bit) != 0u && (b & (3u * round_bit - 1u)) != 0u)
        return (unsigned short)((b >> 16) + 1u);
    return (unsigned short)(b >> 16);
}
