//! Invariants: decode → encode is the identity on codes, quantize is idempotent and picks a
//! nearest value, packing round-trips, stochastic rounding is unbiased and reproducible.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::SplitMix;
use lowbit_formats::{Codec, Conversion, Format, Overflow, Rounding, pack};
use proptest::prelude::*;

fn many_formats() -> Vec<Format> {
    let mut v: Vec<Format> = Format::named().collect();
    for n in [
        "e3m4",
        "e5m3_b11_fnuz",
        "e2m2",
        "e5m10",
        "e6m1_fn",
        "e1m2",
        "int8",
        "int8_full",
        "int4",
        "uint8",
        "int2",
        "int16",
        "e8m3_b140",
    ] {
        v.push(n.parse().unwrap());
    }
    v
}

#[test]
fn decode_then_encode_returns_every_non_nan_code() {
    for f in many_formats() {
        for code in 0..1u32 << f.bits() {
            let x = f.decode(code);
            if x.is_nan() {
                continue;
            }
            // −2^(b−1) is outside the narrow range.
            if let Some(i) = f.as_int()
                && (x as i32) < i.min_value()
            {
                continue;
            }
            let back = f.encode(x);
            // FNUZ has no −0: its 0x80 is NaN, handled above. Everything else is exact.
            assert_eq!(
                back, code,
                "{f}: encode(decode({code:#x}) = {x:e}) = {back:#x}"
            );
        }
    }
}

#[test]
fn facts_of_the_named_formats() {
    let facts = |n: &str| n.parse::<Format>().unwrap().facts();
    let f = facts("e4m3fn");
    assert_eq!(
        (f.max, f.min_normal, f.min_subnormal),
        (448.0, Some(2f32.powi(-6)), Some(2f32.powi(-9)))
    );
    assert_eq!(f.nan_codes, [0x7F, 0xFF]);
    assert!(f.inf_codes.is_empty());
    assert_eq!((f.finite_codes, f.finite_values), (254, 253));
    let f = facts("e5m2");
    assert_eq!((f.max, f.min_subnormal), (57344.0, Some(2f32.powi(-16))));
    assert_eq!(f.inf_codes, [0x7C, 0xFC]);
    assert_eq!(f.nan_codes.len(), 6);
    let f = facts("e4m3");
    assert_eq!(f.max, 240.0);
    let f = facts("e4m3fnuz");
    assert_eq!(
        (f.max, f.min_subnormal, f.nan_codes.clone()),
        (240.0, Some(2f32.powi(-10)), vec![0x80])
    );
    assert_eq!(f.finite_values, 255);
    let f = facts("e5m2fnuz");
    assert_eq!((f.max, f.min_subnormal), (57344.0, Some(2f32.powi(-17))));
    let f = facts("e2m3");
    assert_eq!(
        (f.max, f.min_normal, f.min_subnormal, f.finite_values),
        (7.5, Some(1.0), Some(0.125), 63)
    );
    let f = facts("e3m2");
    assert_eq!(
        (f.max, f.min_normal, f.min_subnormal),
        (28.0, Some(0.25), Some(0.0625))
    );
    let f = facts("e2m1");
    assert_eq!(
        (f.max, f.min_normal, f.min_subnormal, f.finite_values),
        (6.0, Some(1.0), Some(0.5), 15)
    );
    let f = facts("e3m0");
    assert_eq!(
        (f.max, f.min_normal, f.min_subnormal),
        (16.0, Some(0.25), None)
    );
    let f = facts("e8m0");
    assert_eq!(
        (f.max, f.min, f.nan_codes.clone(), f.finite_values),
        (2f32.powi(127), 2f32.powi(-127), vec![0xFF], 255)
    );
    let f = facts("int4");
    assert_eq!((f.max, f.min, f.finite_values), (7.0, -7.0, 15));
    let f = facts("int4_full");
    assert_eq!((f.max, f.min, f.finite_values), (7.0, -8.0, 16));
    let f = facts("uint2");
    assert_eq!((f.max, f.min, f.finite_values), (3.0, 0.0, 4));
}

#[test]
fn integer_rounding_and_saturation() {
    let i8f = Format::INT8;
    assert_eq!(i8f.quantize(2.5), 2.0);
    assert_eq!(i8f.quantize(3.5), 4.0);
    assert_eq!(i8f.quantize(-2.5), -2.0);
    assert_eq!(i8f.quantize(1000.0), 127.0);
    assert_eq!(i8f.quantize(-1000.0), -127.0);
    assert_eq!(i8f.quantize(f32::NEG_INFINITY), -127.0);
    assert_eq!(i8f.quantize(f32::NAN).to_bits(), 0);
    assert_eq!(
        i8f.quantize(-0.2).to_bits(),
        0,
        "integers have a single zero"
    );
    assert_eq!(i8f.encode(-1.0), 0xFF);
    let full: Format = "int8_full".parse().unwrap();
    assert_eq!(full.quantize(-1000.0), -128.0);
    assert_eq!(full.encode(-128.0), 0x80);
    let away = Conversion::new(Rounding::NearestAway, Overflow::Saturate);
    assert_eq!(i8f.quantize_with(2.5, away, 0), 3.0);
    assert_eq!(i8f.quantize_with(-2.5, away, 0), -3.0);
    let zero = Conversion::new(Rounding::TowardZero, Overflow::Saturate);
    assert_eq!(i8f.quantize_with(-2.9, zero, 0), -2.0);
}

#[test]
fn minifloat_rounding_modes_and_saturation() {
    let e = Format::E4M3FN;
    // 464 is the midpoint of 448 and (unrepresentable) 480.
    assert_eq!(e.quantize(464.0), 448.0);
    assert!(e.quantize(464.1).is_nan());
    let sat = Conversion::SATURATE;
    assert_eq!(e.quantize_with(1e9, sat, 0), 448.0);
    assert_eq!(e.quantize_with(f32::NEG_INFINITY, sat, 0), -448.0);
    assert!(e.quantize_with(f32::NAN, sat, 0).is_nan());
    // 1.0625 lies halfway between 1.0 and 1.125.
    let away = Conversion::new(Rounding::NearestAway, Overflow::Reference);
    assert_eq!(e.quantize(1.0625), 1.0);
    assert_eq!(e.quantize_with(1.0625, away, 0), 1.125);
    assert_eq!(e.quantize_with(-1.0625, away, 0), -1.125);
    let zero = Conversion::new(Rounding::TowardZero, Overflow::Reference);
    assert_eq!(e.quantize_with(1.12, zero, 0), 1.0);
    assert_eq!(e.quantize_with(470.0, zero, 0), 448.0);
    // E5M2 overflows to inf, E2M1 saturates.
    assert_eq!(Format::E5M2.quantize(1e6), f32::INFINITY);
    assert_eq!(Format::E5M2.quantize(-61440.0), f32::NEG_INFINITY);
    assert_eq!(Format::E5M2.quantize(61439.0), 57344.0);
    assert_eq!(Format::E2M1.quantize(100.0), 6.0);
    assert_eq!(Format::E2M1.quantize(2.5), 2.0);
    assert_eq!(Format::E2M1.quantize(5.0), 4.0);
    // E8M0: ties go up (the kept bit is the implicit one); zero and negatives are NaN.
    assert_eq!(Format::E8M0.quantize(3.0), 4.0);
    assert_eq!(Format::E8M0.quantize(1.5), 2.0);
    assert!(Format::E8M0.quantize(0.0).is_nan());
    assert!(Format::E8M0.quantize(-1.0).is_nan());
    assert_eq!(Format::E8M0.quantize_with(0.0, sat, 0), 2f32.powi(-127));
}

#[test]
fn stochastic_rounding_is_unbiased_and_reproducible() {
    let f = Format::E2M1;
    let x = 2.3f32; // between 2 and 3: E[q] = 2.3
    let n = 200_000;
    let src = vec![x; n];
    let conv = Conversion::new(Rounding::Stochastic { seed: 1234 }, Overflow::Saturate);
    let codec = Codec::new(f, conv);
    let mut q = vec![0f32; n];
    codec.quantize_slice(&src, &mut q).unwrap();
    let mean = q.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    // Bernoulli(0.3) with n = 2e5: sd of the mean = sqrt(0.21/n) ≈ 0.001; allow 5 sd.
    assert!((mean - 2.3).abs() < 0.005, "mean {mean}");
    assert!(q.iter().all(|&v| v == 2.0 || v == 3.0));
    let mut q2 = vec![0f32; n];
    codec.quantize_slice(&src, &mut q2).unwrap();
    assert_eq!(q, q2, "same seed, same bits");
    let other = Codec::new(
        f,
        Conversion::new(Rounding::Stochastic { seed: 1235 }, Overflow::Saturate),
    );
    other.quantize_slice(&src, &mut q2).unwrap();
    assert_ne!(q, q2, "another seed, other bits");
    // Exactly representable values never move.
    let exact = vec![3.0f32; 1000];
    codec.quantize_slice(&exact, &mut q[..1000]).unwrap();
    assert!(q[..1000].iter().all(|&v| v == 3.0));
}

proptest! {
    #[test]
    fn quantize_is_idempotent_and_nearest(bits in any::<u32>(), fi in 0usize..23) {
        let fs = many_formats();
        let f = fs[fi % fs.len()];
        let x = f32::from_bits(bits);
        let conv = Conversion::SATURATE;
        let q = f.quantize_with(x, conv, 0);
        let qq = f.quantize_with(q, conv, 0);
        prop_assert!(q.to_bits() == qq.to_bits() || (q.is_nan() && qq.is_nan()), "{f}: q({x:e}) = {q:e}, q(q) = {qq:e}");
        if x.is_finite() && q.is_finite() {
            let table = f.value_table();
            prop_assert!(table.contains(q), "{f}: {q:e} is not a value");
            let (lo, hi) = table.neighbours(x);
            if let (Some(lo), Some(hi)) = (lo, hi) {
                let best = ((x as f64 - lo as f64).abs()).min((hi as f64 - x as f64).abs());
                prop_assert!(((q as f64) - (x as f64)).abs() <= best, "{f}: q({x:e}) = {q:e} but {lo:e}/{hi:e} is nearer");
            }
        }
    }

    #[test]
    fn pack_unpack_round_trips(bits in 1u32..=8, n in 0usize..100, seed in any::<u64>()) {
        let mut rng = SplitMix(seed);
        let mask = ((1u16 << bits) - 1) as u8;
        let codes: Vec<u8> = (0..n).map(|_| rng.next_u32() as u8 & mask).collect();
        let packed = pack::pack_to_vec(bits, &codes).unwrap();
        prop_assert_eq!(packed.len(), (n * bits as usize).div_ceil(8));
        let back = pack::unpack_to_vec(bits, &packed, n).unwrap();
        prop_assert_eq!(back, codes);
    }
}

#[test]
fn pack_equals_the_bit_stream_definition() {
    // Every width, every byte value (high bits set too: ignored), lengths around the 8-code
    // words of the 4-bit path: element i occupies bits [i·b, (i+1)·b) of a little-endian stream.
    let codes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    for bits in 1u32..=8 {
        for n in [0, 1, 7, 8, 9, 15, 16, 17, 63, 511, 512] {
            let c = &codes[..n];
            let mut want = vec![0u8; pack::packed_len(bits, n)];
            for (i, &x) in c.iter().enumerate() {
                for k in 0..bits as usize {
                    if x >> k & 1 == 1 {
                        let bit = i * bits as usize + k;
                        want[bit / 8] |= 1 << (bit % 8);
                    }
                }
            }
            assert_eq!(
                pack::pack_to_vec(bits, c).unwrap(),
                want,
                "bits {bits}, n {n}"
            );
        }
    }
}

#[test]
fn packing_layouts() {
    // FP4/INT4: element 2i in the low nibble.
    assert_eq!(
        pack::pack_to_vec(4, &[0x1, 0x2, 0x3]).unwrap(),
        [0x21, 0x03]
    );
    // INT2: element 4i + k in bits 2k.
    assert_eq!(
        pack::pack_to_vec(2, &[1, 2, 3, 0, 3]).unwrap(),
        [0b00_11_10_01, 0b11]
    );
    // FP6: four values in three bytes, little-endian bit stream.
    let p = pack::pack_to_vec(6, &[0x3F, 0x00, 0x15, 0x2A]).unwrap();
    assert_eq!(p, [0x3F, 0x50, 0xA9]);
    assert!(pack::pack(9, &[1], &mut [0, 0]).is_err());
    let err = pack::pack(4, &[1, 2, 3], &mut [0; 1]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "length mismatch in pack: dst has 1 elements, expected 2"
    );
}

#[test]
fn values_are_sorted_and_exact() {
    let v = Format::E3M2.values();
    assert_eq!(v.len(), 63);
    assert!(v.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(*v.last().unwrap(), 28.0);
    let t = Format::E4M3FN.value_table();
    assert!(t.contains(-0.0) && t.contains(448.0) && !t.contains(449.0) && !t.contains(f32::NAN));
}

#[test]
fn e8m0_minimum_is_exact_under_every_rule() {
    let min = 2f32.powi(-127);
    for rounding in [
        Rounding::NearestEven,
        Rounding::NearestAway,
        Rounding::TowardZero,
        Rounding::Stochastic { seed: 3 },
    ] {
        for overflow in [Overflow::Reference, Overflow::Saturate] {
            for rand in [0u32, u32::MAX / 2, u32::MAX] {
                assert_eq!(
                    Format::E8M0.encode_with(min, Conversion::new(rounding, overflow), rand),
                    0,
                    "{rounding:?}"
                );
            }
        }
    }
}
