//! From statistics to scales: the rules of every [`ScaleKind`], on bit patterns.

#[cfg(test)]
use lowbit_formats::{Conversion, Format};

use crate::spec::{
    E4m3Rounding, E8m0Rounding, Po2Rounding, QuantSpec, ScaleKind, exponent_of, pow2,
};

/// E4M3 smallest normal, the lower clamp of NVFP4 block scales (torchao `E4M3_EPS`).
pub const E4M3_MIN_NORMAL: f32 = 0.015625;
/// E4M3 (FN) largest value.
pub const E4M3_MAX: f32 = 448.0;

/// The scale and zero point of one group.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Param {
    /// The stored scale (E8M0 value, decoded E4M3 block scale, power of two or f32).
    pub scale: f32,
    /// The zero point (0 for symmetric specs), an integer value held in f32.
    pub zero: f32,
}

/// `2^k` rounded from a positive finite `t` by `rounding`, from its bit pattern.
///
/// `t` is a quotient of two f32 values computed in f64: it is a power of two exactly when the
/// f32 quotient is, and otherwise lies at least 2⁻⁴⁸ (relative) away from every power of two
/// and from every `√2·2^k`, far beyond f64's rounding error, so the comparisons are exact.
pub(crate) fn po2_exponent(t: f64, rounding: Po2Rounding) -> i32 {
    let bits = t.to_bits();
    let e = ((bits >> 52) & 0x7FF) as i32 - 1023;
    let mant = bits & ((1u64 << 52) - 1);
    match rounding {
        Po2Rounding::Floor => e,
        Po2Rounding::Ceil => e + (mant != 0) as i32,
        Po2Rounding::Nearest => {
            let m = t / 2f64.powi(e); // exact: a power-of-two rescale, in [1, 2)
            e + (m * m >= 2.0) as i32
        }
    }
}

fn clamp_po2(k: i32) -> f32 {
    pow2(k.clamp(-149, 127))
}

/// The stored scale of a symmetric group whose absolute maximum is `amax`.
///
/// `tensor_scale` is NVFP4's first level (ignored by the other kinds).
pub(crate) fn scale_from_amax(spec: &QuantSpec, amax: f32, tensor_scale: f32) -> f32 {
    ScaleRule::new(spec).scale(amax, tensor_scale)
}

/// A spec's symmetric scale rule with its element constants worked out once (the format's
/// largest value, emax, mantissa width, implied unit), for kernels that apply it per block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScaleRule {
    kind: ScaleKind,
    /// Largest element value (times the implied unit).
    max: f32,
    emax: i32,
    man_bits: u32,
    unit: f32,
}

impl ScaleRule {
    pub(crate) fn new(spec: &QuantSpec) -> ScaleRule {
        ScaleRule {
            kind: spec.scale(),
            max: spec.element_max(),
            emax: spec.element_emax(),
            man_bits: spec.element_man_bits(),
            unit: spec.element_unit(),
        }
    }

    /// The stored scale of a group with absolute maximum `amax` ([`scale_from_amax`]).
    #[inline(always)]
    pub(crate) fn scale(&self, amax: f32, tensor_scale: f32) -> f32 {
        if !amax.is_finite() {
            return f32::NAN;
        }
        let max = self.max;
        match self.kind {
            ScaleKind::F32 => {
                if amax == 0.0 {
                    return 1.0;
                }
                let s = amax / max;
                if s == 0.0 { f32::from_bits(1) } else { s }
            }
            ScaleKind::PowerOfTwo { rounding } => {
                if amax == 0.0 {
                    return 1.0;
                }
                clamp_po2(po2_exponent(amax as f64 / max as f64, rounding))
            }
            ScaleKind::E8M0 { rounding } => self.e8m0(amax, rounding),
            ScaleKind::Nvfp4 { block_rounding } => {
                nvfp4_block_scale(amax, max, tensor_scale, block_rounding)
            }
            ScaleKind::E4M3 { rounding } => nvfp4_block_scale(amax, max, 1.0, rounding),
        }
    }

    /// [`scale`](Self::scale) of consecutive groups, `out[j]` from `amax[j]`: the same values,
    /// with the dispatch on the kind (and on its rounding) taken once, outside the loop. The
    /// fused kernels call it once per group of up to 16 blocks (inlined into their
    /// AVX-512-compiled caller, where the loops vectorize 16 wide).
    #[inline(always)]
    pub(crate) fn scales(&self, amax: &[f32], tensor_scale: f32, out: &mut [f32]) {
        #[inline(always)]
        fn each(amax: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32) {
            for (o, &a) in out.iter_mut().zip(amax) {
                *o = f(a);
            }
        }
        let (emax, max) = (self.emax, self.max);
        match self.kind {
            // Branch-free forms (bit operations and selects), which the compiler vectorizes.
            ScaleKind::E8M0 { rounding } => match rounding {
                E8m0Rounding::Floor => each(amax, out, |a| e8m0_select(a, floor_log2(a) - emax)),
                E8m0Rounding::Ceil => each(amax, out, |a| e8m0_select(a, ceil_log2(a) - emax)),
                E8m0Rounding::Even => {
                    let m = self.man_bits.min(22);
                    each(amax, out, |a| e8m0_select(a, even_log2(a, m) - emax))
                }
                E8m0Rounding::RCeil => each(amax, out, |a| self.e8m0(a, E8m0Rounding::RCeil)),
            },
            ScaleKind::Nvfp4 { block_rounding } => each(amax, out, |a| {
                if !a.is_finite() {
                    f32::NAN
                } else {
                    nvfp4_block_scale(a, max, tensor_scale, block_rounding)
                }
            }),
            ScaleKind::E4M3 { rounding } => each(amax, out, |a| {
                if !a.is_finite() {
                    f32::NAN
                } else {
                    nvfp4_block_scale(a, max, 1.0, rounding)
                }
            }),
            ScaleKind::F32 => each(amax, out, |a| {
                let s = a / max;
                let s = if s == 0.0 { f32::from_bits(1) } else { s };
                let s = if a == 0.0 { 1.0 } else { s };
                if a.is_finite() { s } else { f32::NAN }
            }),
            _ => each(amax, out, |a| self.scale(a, tensor_scale)),
        }
    }

    /// The factor [`effective`](Self::effective) multiplies a stored scale by: the tensor
    /// scale (NVFP4) or the implied element unit.
    #[inline]
    pub(crate) fn effective_factor(&self, tensor_scale: f32) -> f32 {
        match self.kind {
            ScaleKind::Nvfp4 { .. } => tensor_scale,
            _ => self.unit,
        }
    }

    /// The scale the elements are divided by ([`effective`]).
    #[inline]
    pub(crate) fn effective(&self, stored: f32, tensor_scale: f32) -> f32 {
        match self.kind {
            ScaleKind::Nvfp4 { .. } => tensor_scale * stored,
            _ => stored * self.unit,
        }
    }

    /// OCP MX v1.0 §6.3 and its variants: `X = 2^e`, `e` clamped below at −127 (the smallest
    /// E8M0 value); an exponent above 127 gives NaN, as does a non-finite amax. An all-zero
    /// group gets `2^−127` (E8M0 code 0x00), so its elements stay zero.
    #[inline(always)]
    fn e8m0(&self, amax: f32, rounding: E8m0Rounding) -> f32 {
        if !amax.is_finite() {
            return f32::NAN;
        }
        if amax == 0.0 {
            return pow2(-127);
        }
        let emax = self.emax;
        let a = amax.abs();
        let e = match rounding {
            E8m0Rounding::Floor => exponent_of(a) - emax,
            E8m0Rounding::Ceil => {
                let pow = a.to_bits() & 0x007F_FFFF == 0
                    || (a.to_bits() >> 23 == 0 && a.to_bits().is_power_of_two());
                exponent_of(a) + (!pow) as i32 - emax
            }
            E8m0Rounding::Even => {
                // Round the mantissa to the element's width, ties up (torchao EVEN: add half an
                // ulp of the element, then keep the exponent bits). A carry moves to the next
                // binade.
                let m = self.man_bits.min(22);
                let rounded = (a.to_bits() + (1u32 << (22 - m))) & 0x7F80_0000;
                if rounded == 0 {
                    exponent_of(a) - emax
                } else {
                    exponent_of(f32::from_bits(rounded)) - emax
                }
            }
            E8m0Rounding::RCeil => po2_exponent(a as f64 / self.max as f64, Po2Rounding::Ceil),
        };
        if e > 127 { f32::NAN } else { pow2(e.max(-127)) }
    }
}

/// `floor(log2(a))` for a finite nonzero `a ≥ 0`, branch-free ([`exponent_of`] without its
/// branch): an f32 subnormal is scaled by 2^64 (exactly) into the normal range first.
#[inline(always)]
fn floor_log2(a: f32) -> i32 {
    let b = a.to_bits() & 0x7FFF_FFFF;
    let biased = (b >> 23) as i32;
    let scaled = ((f32::from_bits(b) * 18_446_744_073_709_551_616.0).to_bits() >> 23) as i32;
    if biased != 0 {
        biased - 127
    } else {
        scaled - 127 - 64
    }
}

/// `ceil(log2(a))` for a finite nonzero `a ≥ 0`: [`floor_log2`] plus one unless `a` is a power
/// of two (the E8M0 `Ceil` rule's test, branch-free).
#[inline(always)]
fn ceil_log2(a: f32) -> i32 {
    let b = a.to_bits() & 0x7FFF_FFFF;
    let pow = b & 0x007F_FFFF == 0 || (b >> 23 == 0 && b & b.wrapping_sub(1) == 0);
    floor_log2(a) + (!pow) as i32
}

/// The E8M0 `Even` rule's exponent (mantissa rounded half up to `m` bits, a carry moving to
/// the next binade), branch-free.
#[inline(always)]
fn even_log2(a: f32, m: u32) -> i32 {
    let rounded = ((a.to_bits() & 0x7FFF_FFFF).wrapping_add(1u32 << (22 - m))) & 0x7F80_0000;
    if rounded == 0 {
        floor_log2(a)
    } else {
        (rounded >> 23) as i32 - 127
    }
}

/// The E8M0 scale `2^e` of a block with maximum `a` and exponent `e` (computed as if `a` were
/// finite and nonzero), with [`ScaleRule::e8m0`]'s guards as selects: NaN for a non-finite `a`
/// or `e > 127`, `2^−127` for `a = 0`, `e` clamped below at −127.
#[inline(always)]
fn e8m0_select(a: f32, e: i32) -> f32 {
    let e = e.max(-127);
    let bits = if e >= -126 {
        ((e + 127) as u32) << 23
    } else {
        1 << 22
    };
    let v = if e > 127 {
        f32::NAN
    } else {
        f32::from_bits(bits)
    };
    let v = if a == 0.0 { f32::from_bits(1 << 22) } else { v };
    if a.is_finite() { v } else { f32::NAN }
}

/// NVFP4 first level: `amax / (448 · max)` in f32 (torchao `per_tensor_amax_to_scale`).
/// Guards (not in torchao, which would divide by zero): an all-zero tensor gets 1.0 and a
/// quotient that underflows to 0 gets the smallest positive f32; a non-finite amax gives NaN.
pub(crate) fn nvfp4_tensor_scale(spec: &QuantSpec, amax: f32) -> f32 {
    if !amax.is_finite() {
        return f32::NAN;
    }
    if amax == 0.0 {
        return 1.0;
    }
    let s = amax / (E4M3_MAX * spec.format().max_value());
    if s == 0.0 { f32::from_bits(1) } else { s }
}

/// NVFP4 second level, following torchao `_nvfp4_quantize` (two-level branch):
/// `(block_amax / max) / tensor_scale`, clamped to `[2⁻⁶, 448]`, cast to E4M3 (nearest even,
/// or up to the next E4M3 value).
#[inline(always)]
pub(crate) fn nvfp4_block_scale(
    block_amax: f32,
    max: f32,
    tensor_scale: f32,
    rounding: E4m3Rounding,
) -> f32 {
    let raw = (block_amax / max) / tensor_scale;
    if raw.is_nan() {
        return f32::NAN;
    }
    let clamped = raw.clamp(E4M3_MIN_NORMAL, E4M3_MAX);
    let near = e4m3_nearest_normal(clamped);
    match rounding {
        E4m3Rounding::Nearest => near,
        E4m3Rounding::Up if near >= clamped => near,
        // The next E4M3 value: one unit in the last of its 3 mantissa bits (a carry moves to
        // the next binade); `near < clamped ≤ 448` keeps it ≤ 448.
        E4m3Rounding::Up => f32::from_bits(near.to_bits() + (1 << 20)),
    }
}

/// E4M3 (FN) nearest-even rounding of `x` in its normal range `[2⁻⁶, 448]`, on the bit
/// pattern: keep 3 of the 23 mantissa bits (a carry moves to the next binade; nothing in the
/// range rounds above 448). Equal to `Format::E4M3FN.quantize_with(x, SATURATE, 0)` there
/// (tested), without the general conversion's per-call cost (one call per NVFP4 block).
#[inline]
pub(crate) fn e4m3_nearest_normal(x: f32) -> f32 {
    let b = x.to_bits();
    f32::from_bits((b + 0x7_FFFF + ((b >> 20) & 1)) & 0xFFF0_0000)
}

/// The general-conversion form of [`nvfp4_block_scale`]'s E4M3 cast (reference for tests).
#[cfg(test)]
pub(crate) fn nvfp4_block_scale_reference(
    block_amax: f32,
    max: f32,
    tensor_scale: f32,
    rounding: E4m3Rounding,
) -> f32 {
    let raw = (block_amax / max) / tensor_scale;
    if raw.is_nan() {
        return f32::NAN;
    }
    let clamped = raw.clamp(E4M3_MIN_NORMAL, E4M3_MAX);
    let near = Format::E4M3FN.quantize_with(clamped, Conversion::SATURATE, 0);
    match rounding {
        E4m3Rounding::Nearest => near,
        E4m3Rounding::Up if near >= clamped => near,
        E4m3Rounding::Up => Format::E4M3FN.decode(Format::E4M3FN.encode(near) + 1),
    }
}

/// The scale the elements are divided by: the stored scale times the implied element unit
/// (MXINT) or times the tensor scale (NVFP4).
pub(crate) fn effective(spec: &QuantSpec, stored: f32, tensor_scale: f32) -> f32 {
    ScaleRule::new(spec).effective(stored, tensor_scale)
}

/// Scale and zero point of an asymmetric group from its min and max (PyTorch's affine
/// observer rule): the range is widened to include 0, `s = (max − min) / (qmax − qmin)`,
/// `z = qmin − round(min / s)` clamped to `[qmin, qmax]`.
pub(crate) fn affine_from_minmax(spec: &QuantSpec, min: f32, max: f32) -> Param {
    if !min.is_finite() || !max.is_finite() {
        return Param {
            scale: f32::NAN,
            zero: 0.0,
        };
    }
    let (lo, hi) = (min.min(0.0), max.max(0.0));
    let (qmin, qmax) = match spec.format().as_int() {
        Some(i) => (i.min_value() as f32, i.max_value() as f32),
        None => (-spec.format().max_value(), spec.format().max_value()),
    };
    let mut s = (hi - lo) / (qmax - qmin);
    if s == 0.0 || !s.is_finite() {
        s = 1.0;
    }
    if let ScaleKind::PowerOfTwo { rounding } = spec.scale() {
        s = clamp_po2(po2_exponent(s as f64, rounding));
    }
    let zero = (qmin - (lo / s).round_ties_even()).clamp(qmin, qmax);
    Param { scale: s, zero }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_scales_equal_the_per_group_rule() {
        // Every kind and rounding, on a sweep of bit patterns (all exponents, subnormals,
        // powers of two and their neighbours, mantissa ties of the EVEN rule), 0, inf, NaN.
        let mut a: Vec<f32> = (0..=0x7FFF_FFFFu32)
            .step_by(1021)
            .map(f32::from_bits)
            .collect();
        for e in 0..255u32 {
            for m in [
                0u32, 1, 0x3F_FFFF, 0x40_0000, 0x40_0001, 0x7F_FFFF, 0x1F_FFFF, 0x20_0000,
            ] {
                a.push(f32::from_bits(e << 23 | m));
            }
        }
        for k in 0..23 {
            a.push(f32::from_bits(1 << k));
            a.push(f32::from_bits((1 << k) + 1));
        }
        a.extend([
            0.0,
            f32::INFINITY,
            f32::NAN,
            f32::from_bits(0x7F80_0001),
            f32::MAX,
        ]);
        let mut kinds = vec![
            ScaleKind::F32,
            ScaleKind::Nvfp4 {
                block_rounding: E4m3Rounding::Nearest,
            },
            ScaleKind::Nvfp4 {
                block_rounding: E4m3Rounding::Up,
            },
        ];
        for rounding in [Po2Rounding::Floor, Po2Rounding::Ceil, Po2Rounding::Nearest] {
            kinds.push(ScaleKind::PowerOfTwo { rounding });
        }
        for rounding in [
            E8m0Rounding::Floor,
            E8m0Rounding::Ceil,
            E8m0Rounding::Even,
            E8m0Rounding::RCeil,
        ] {
            kinds.push(ScaleKind::E8M0 { rounding });
        }
        let mut specs = 0;
        for preset in [
            "mxfp8_e4m3",
            "mxfp8_e5m2",
            "mxfp6_e2m3",
            "mxfp4",
            "mxint8",
            "int8",
        ] {
            let base: QuantSpec = preset.parse().unwrap();
            for &kind in &kinds {
                let Ok(spec) = base.to_builder().scale(kind).build() else {
                    continue;
                };
                let rule = ScaleRule::new(&spec);
                specs += 1;
                for ts in [1.0f32, 3.7e-3] {
                    let mut got = vec![0.0f32; a.len()];
                    for (ch, o) in a.chunks(16).zip(got.chunks_mut(16)) {
                        rule.scales(ch, ts, o);
                    }
                    for (&x, g) in a.iter().zip(&got) {
                        let want = rule.scale(x, ts);
                        assert_eq!(
                            g.to_bits(),
                            want.to_bits(),
                            "{spec} amax {x:e} ({:#x})",
                            x.to_bits()
                        );
                    }
                }
            }
        }
        assert!(specs >= 40, "only {specs} specs built");
    }

    #[test]
    fn fast_e4m3_block_scale_equals_the_general_conversion() {
        // Every f32 in [2^-6, 448] with a stride, plus the E4M3 values, ties and neighbours.
        let lo = E4M3_MIN_NORMAL.to_bits();
        let hi = E4M3_MAX.to_bits();
        let mut xs: Vec<f32> = (lo..=hi).step_by(97).map(f32::from_bits).collect();
        for c in 0..0x7Fu32 {
            let v = Format::E4M3FN.decode(c);
            if (E4M3_MIN_NORMAL..=E4M3_MAX).contains(&v) {
                let b = v.to_bits();
                for d in [
                    b,
                    b - 1,
                    b + 1,
                    b + (1 << 19),
                    b + (1 << 19) - 1,
                    b + (1 << 19) + 1,
                ] {
                    let x = f32::from_bits(d);
                    if (E4M3_MIN_NORMAL..=E4M3_MAX).contains(&x) {
                        xs.push(x);
                    }
                }
            }
        }
        for &x in &xs {
            let want = Format::E4M3FN.quantize_with(x, Conversion::SATURATE, 0);
            assert_eq!(e4m3_nearest_normal(x).to_bits(), want.to_bits(), "{x}");
        }
        // The whole rule, both roundings, with amax and tensor scales around the clamps.
        let amaxes = [
            0.0f32,
            1e-30,
            0.01,
            0.3,
            1.0,
            5.9,
            6.0,
            100.0,
            2688.0,
            3.0e5,
            f32::MAX,
        ];
        for &a in &amaxes {
            for ts in [1.0f32, 1e-3, 0.37, 2.5e-4, 1e-38] {
                for r in [E4m3Rounding::Nearest, E4m3Rounding::Up] {
                    let got = nvfp4_block_scale(a, 6.0, ts, r);
                    let want = nvfp4_block_scale_reference(a, 6.0, ts, r);
                    assert_eq!(got.to_bits(), want.to_bits(), "{a} {ts} {r:?}");
                }
            }
        }
        for &x in &xs {
            for r in [E4m3Rounding::Nearest, E4m3Rounding::Up] {
                let got = nvfp4_block_scale(x * 6.0, 6.0, 1.0, r);
                let want = nvfp4_block_scale_reference(x * 6.0, 6.0, 1.0, r);
                assert_eq!(got.to_bits(), want.to_bits(), "{x} {r:?}");
            }
        }
    }
}
