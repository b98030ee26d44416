//! Hand-derived MX and NVFP4 cases, properties, calibrators, compliance, storage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lowbit_formats::Format;
use lowbit_quant::*;
use proptest::prelude::*;

/// SplitMix64: seeded, tiny.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }
    fn laplace(&mut self) -> f32 {
        let u = self.unit() - 0.5;
        (-u.signum() * (1.0 - 2.0 * u.abs()).ln()) as f32
    }
    fn student_t(&mut self, df: usize) -> f32 {
        let z = self.normal();
        let chi2: f64 = (0..df).map(|_| self.normal().powi(2)).sum();
        (z / (chi2 / df as f64).sqrt()) as f32
    }
}

fn fq(spec: &QuantSpec, x: &[f32], shape: &[usize]) -> Vec<f32> {
    let mut q = vec![0.0; x.len()];
    spec.fake_quantize(x, shape, &mut q).unwrap();
    q
}

fn with_e8m0(spec: &str, r: E8m0Rounding) -> QuantSpec {
    spec.parse::<QuantSpec>()
        .unwrap()
        .to_builder()
        .scale(ScaleKind::E8M0 { rounding: r })
        .build()
        .unwrap()
}

// ---------- OCP MX v1.0 hand cases ----------

#[test]
fn mx_957_floor_saturates_to_896_not_under_ceil_or_rceil() {
    let mut x = vec![0.5f32; 32];
    x[3] = 957.0;
    // FLOOR: floor(log2 957) = 9, emax(E4M3) = 8 → X = 2; 957/2 = 478.5 > 448 → 448 → 896.
    let q = fq(&with_e8m0("mxfp8_e4m3", E8m0Rounding::Floor), &x, &[32]);
    assert_eq!(q[3], 896.0);
    // CEIL: ceil(log2 957) − 8 = 2 → X = 4; 239.25 → 240 (step 16 in [128, 256)) → 960.
    let q = fq(&with_e8m0("mxfp8_e4m3", E8m0Rounding::Ceil), &x, &[32]);
    assert_eq!(q[3], 960.0);
    // RCEIL: ceil(log2(957/448)) = 2 → X = 4 → 960.
    let q = fq(&with_e8m0("mxfp8_e4m3", E8m0Rounding::RCeil), &x, &[32]);
    assert_eq!(q[3], 960.0);
    // EVEN: 957 rounds to 960 (3 mantissa bits), still binade 9 → X = 2 → 896.
    let q = fq(&with_e8m0("mxfp8_e4m3", E8m0Rounding::Even), &x, &[32]);
    assert_eq!(q[3], 896.0);
}

#[test]
fn mx_scale_values_and_elements() {
    let spec: QuantSpec = "mxfp4".parse().unwrap();
    // amax 5 → floor(log2 5) = 2, emax(E2M1) = 2 → X = 1. Elements: 5 → 4 or 6 tie → 4 (even), 0.3 → 0.5, 0.2 → 0.
    let mut x = vec![0.0f32; 32];
    x[0] = 5.0;
    x[1] = 0.3;
    x[2] = -0.2;
    x[3] = -2.6;
    let s = spec.compute_scales(&x, &[32]).unwrap();
    assert_eq!(s.values, [1.0]);
    let q = fq(&spec, &x, &[32]);
    assert_eq!(&q[..4], &[4.0, 0.5, -0.0, -3.0]);
}

#[test]
fn mx_all_zero_block_scale_is_2_pow_minus_127() {
    let spec: QuantSpec = "mxfp8_e4m3".parse().unwrap();
    let x = vec![0.0f32; 64];
    let s = spec.compute_scales(&x, &[64]).unwrap();
    assert_eq!(s.values, [2f32.powi(-127), 2f32.powi(-127)]);
    assert!(fq(&spec, &x, &[64]).iter().all(|v| *v == 0.0));
    let t = spec.quantize(&x, &[64]).unwrap();
    let bytes = t.to_safetensors().unwrap();
    let back = QuantizedTensor::from_safetensors(&bytes).unwrap();
    assert_eq!(back.scales().values, s.values); // E8M0 code 0x00
}

#[test]
fn mx_inf_nan_make_the_block_nan() {
    for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
        let spec: QuantSpec = "mxfp8_e4m3".parse().unwrap();
        let mut x = vec![1.0f32; 64];
        x[40] = bad;
        let q = fq(&spec, &x, &[64]);
        assert!(q[..32].iter().all(|v| *v == 1.0));
        assert!(q[32..].iter().all(|v| v.is_nan()), "{bad}");
        let s = spec.compute_scales(&x, &[64]).unwrap();
        assert!(s.values[1].is_nan());
        let t = spec.quantize(&x, &[64]).unwrap();
        let d = t.dequantize().unwrap();
        assert!(d[32..].iter().all(|v| v.is_nan()));
        assert_eq!(
            t.to_safetensors()
                .map(|b| QuantizedTensor::from_safetensors(&b).is_ok())
                .ok(),
            Some(true)
        );
    }
}

#[test]
fn mx_huge_and_tiny_blocks_clamp_the_exponent() {
    let spec: QuantSpec = "mxfp8_e4m3".parse().unwrap();
    // Huge: amax = f32::MAX → floor log2 = 127, − 8 = 119: in range.
    let x = vec![f32::MAX; 32];
    let s = spec.compute_scales(&x, &[32]).unwrap();
    assert_eq!(s.values, [2f32.powi(119)]);
    assert_eq!(fq(&spec, &x, &[32])[0], 448.0 * 2f32.powi(119)); // 1.99·2^127/2^119 saturates
    // MXINT8 (emax 0): amax 2^127 → X = 2^127, the top of E8M0.
    let mxint8: QuantSpec = "mxint8".parse().unwrap();
    let x = vec![2f32.powi(127); 32];
    assert_eq!(
        mxint8.compute_scales(&x, &[32]).unwrap().values,
        [2f32.powi(127)]
    );
    assert_eq!(fq(&mxint8, &x, &[32])[0], 2f32.powi(127));
    // Tiny: amax = 2^-140 → −140 − 8 = −148 → clamped to −127; elements become subnormal E4M3 or 0.
    let mut x = vec![0.0f32; 32];
    x[0] = 2f32.powi(-140);
    x[1] = 2f32.powi(-135);
    x[2] = 2f32.powi(-133) * 1.5; // 1.5·2^-6 at X = 2^-127
    let s = spec.compute_scales(&x, &[32]).unwrap();
    assert_eq!(s.values, [2f32.powi(-127)]);
    let q = fq(&spec, &x, &[32]);
    // 2^-140 / 2^-127 = 2^-13 < half the smallest subnormal 2^-9 → 0; 2^-135/2^-127 = 2^-8 → 2^-9·? (subnormal step 2^-9) → 2^-8.
    assert_eq!(q[0], 0.0);
    assert_eq!(q[1], 2f32.powi(-135));
    assert_eq!(q[2], 2f32.powi(-133) * 1.5);
}

#[test]
fn mx_subnormal_elements() {
    // E4M3 subnormals are k·2^-9. amax 448 → X = 1; 0.01 = 5.12·2^-9 → 5·2^-9.
    let spec: QuantSpec = "mxfp8_e4m3".parse().unwrap();
    let mut x = vec![0.0f32; 32];
    x[0] = 448.0;
    x[1] = 0.01;
    x[2] = 2f32.powi(-10) * 1.0; // tie between 0 and 2^-9 → even → 0
    x[3] = 2f32.powi(-10) * 3.0; // tie between 2^-9 and 2^-8 → 2^-8 (even code)
    let q = fq(&spec, &x, &[32]);
    assert_eq!(q[1], 5.0 * 2f32.powi(-9));
    assert_eq!(q[2], 0.0);
    assert_eq!(q[3], 2f32.powi(-8));
}

#[test]
fn mxint8_uses_the_implied_2_pow_minus_6() {
    let spec: QuantSpec = "mxint8".parse().unwrap();
    assert_eq!(spec.element_unit(), 2f32.powi(-6));
    assert_eq!(spec.element_emax(), 0);
    // amax 3 → floor log2 = 1 → X = 2; element step = 2·2^-6 = 1/32. 1.01 → 32.32 → 32 → 1.0.
    let mut x = vec![0.0f32; 32];
    x[0] = 3.0;
    x[1] = 1.01;
    x[2] = -3.99; // not the max in magnitude? it is: amax 3.99 → still X = 2
    let s = spec.compute_scales(&x, &[32]).unwrap();
    assert_eq!(s.values, [2.0]);
    let q = fq(&spec, &x, &[32]);
    assert_eq!(q[0], 3.0);
    assert_eq!(q[1], 1.0);
    assert_eq!(q[2], -127.0 / 32.0); // saturates at −127·2^-6·2 (narrow range)
}

// ---------- NVFP4 hand cases ----------

#[test]
fn nvfp4_two_level_hand_cases() {
    let spec: QuantSpec = "nvfp4".parse().unwrap();
    // Tensor amax 2688 = 448·6 → tensor scale 1.
    let mut x = vec![0.0f32; 64];
    x[0] = 2688.0; // block 0: bs = 2688/6 = 448 → elements /448: 2688 → 6
    x[1] = 100.0; //  100/448 = 0.223 → 0 (E2M1 step 0.5 near 0; 0.223 < 0.25) → 0
    x[16] = 6.0; //   block 1: bs = 1 → E2M1 directly
    x[17] = 2.6; //   → 3
    x[32] = 7.0; //   block 2: bs = 7/6 = 1.1667 → E4M3 nearest 1.125; 7/1.125 = 6.22 → 6 → 6.75
    x[33] = 1.0; //   1/1.125 = 0.889 → 1 → 1.125
    // block 3: all zero → bs clamped to 2^-6, zeros out.
    let sc = spec.compute_scales(&x, &[64]).unwrap();
    assert_eq!(sc.tensor_scale, Some(1.0));
    assert_eq!(sc.values, [448.0, 1.0, 1.125, 0.015625]);
    let q = fq(&spec, &x, &[64]);
    assert_eq!(
        [q[0], q[1], q[16], q[17], q[32], q[33], q[48]],
        [2688.0, 0.0, 6.0, 3.0, 6.75, 1.125, 0.0]
    );
    // Block scale rounded up: 1.25; 7/1.25 = 5.6 → 6 → 7.5; 1/1.25 = 0.8 → 1 → 1.25.
    let up = spec
        .to_builder()
        .scale(ScaleKind::Nvfp4 {
            block_rounding: E4m3Rounding::Up,
        })
        .build()
        .unwrap();
    let q = fq(&up, &x, &[64]);
    assert_eq!([q[32], q[33]], [7.5, 1.25]);
    assert_eq!(up.compute_scales(&x, &[64]).unwrap().values[2], 1.25);
}

#[test]
fn nvfp4_tensor_scale_is_amax_over_2688() {
    let spec: QuantSpec = "nvfp4".parse().unwrap();
    let x: Vec<f32> = (0..32).map(|i| i as f32 * 0.25).collect(); // amax 7.75
    let sc = spec.compute_scales(&x, &[2, 16]).unwrap();
    assert_eq!(sc.tensor_scale, Some(7.75f32 / 2688.0));
    assert_eq!(sc.shape, [2, 1]);
    let t = spec.quantize(&x, &[2, 16]).unwrap();
    assert_eq!(t.bits_per_element(), 4.0 + (2.0 * 8.0 + 32.0) / 32.0);
    let back = QuantizedTensor::from_safetensors(&t.to_safetensors().unwrap()).unwrap();
    assert_eq!(back, t);
    let mut q = vec![0.0; 32];
    spec.fake_quantize(&x, &[2, 16], &mut q).unwrap();
    assert_eq!(t.dequantize().unwrap(), q);
}

#[test]
fn e4m3_single_level_scales_as_torchao_without_a_tensor_scale() {
    // torchao `nvfp4_quantize(x, per_tensor_scale=None)`: block_scale = amax / 6 (f32),
    // clamped to [2^-6, 448], cast to E4M3 (nearest even); no tensor scale.
    let spec = QuantSpec::builder(Format::E2M1)
        .per_block(-1, 16)
        .scale(ScaleKind::E4M3 {
            rounding: E4m3Rounding::Nearest,
        })
        .build()
        .unwrap();
    let mut x = vec![0.0f32; 80];
    x[0] = 7.0; //  block 0: 7/6 = 1.1667 → E4M3 1.125 (neighbours 1.125, 1.25); 7/1.125 = 6.2 → 6
    x[1] = 1.0; //  1/1.125 = 0.889 → 1 → 1.125
    x[16] = 6000.0; // block 1: 1000 → clamps to 448: 6000/448 = 13.4 saturates to 6 → 2688
    x[32] = 0.03; //  block 2: 0.005 → clamps up to 2^-6; 0.03 · 64 = 1.92 → 2 → 0.03125
    x[48] = 13.0; //  block 3: 13/6 = 2.1667 → E4M3 2.25 (2.0, 2.25: 2.1667 is nearer 2.25)
    x[49] = -2.0; //  -2/2.25 = -0.889 → -1 → -2.25
    // block 4: all zero → 2^-6 (torchao clamps 0 up to E4M3_EPS), zeros out.
    let sc = spec.compute_scales(&x, &[80]).unwrap();
    assert_eq!(sc.tensor_scale, None);
    assert_eq!(sc.values, [1.125, 448.0, 0.015625, 2.25, 0.015625]);
    let q = fq(&spec, &x, &[80]);
    assert_eq!(
        [q[0], q[1], q[16], q[32], q[48], q[49], q[64]],
        [6.75, 1.125, 2688.0, 0.03125, 13.5, -2.25, 0.0]
    );
    // Stored as E4M3 codes: 8 bits per scale, no tensor scale.
    let t = spec.quantize(&x, &[80]).unwrap();
    assert_eq!(t.bits_per_element(), 4.0 + 5.0 * 8.0 / 80.0);
    let back = QuantizedTensor::from_safetensors(&t.to_safetensors().unwrap()).unwrap();
    assert_eq!(back.dequantize().unwrap(), q);
    // The same numbers as two-level NVFP4 with a tensor scale of exactly 1 (amax 2688).
    let mut y = x.clone();
    y[16] = 2688.0;
    let two: QuantSpec = "nvfp4".parse().unwrap();
    assert_eq!(
        two.compute_scales(&y, &[80]).unwrap().tensor_scale,
        Some(1.0)
    );
    assert_eq!(fq(&spec, &y, &[80]), fq(&two, &y, &[80]));
    // Rounded up: 7/6 → 1.25, nothing clips (7/1.25 = 5.6 → 6 → 7.5).
    let up = spec
        .to_builder()
        .scale(ScaleKind::E4M3 {
            rounding: E4m3Rounding::Up,
        })
        .build()
        .unwrap();
    assert_eq!(fq(&up, &x, &[80])[0], 7.5);
    // Configs name it `e4m3`; compliance checks scales against the E4M3 table.
    let json = serde_json::to_string(&spec.scale()).unwrap();
    assert_eq!(json, r#"{"kind":"e4m3","rounding":"nearest"}"#);
    let rep = check_compliance(&spec, &q, &[80], &sc).unwrap();
    assert!(rep.is_compliant(), "{rep:?}");
    let mut bad = sc.clone();
    bad.values[3] = 2.3;
    let rep = check_compliance(&spec, &q, &[80], &bad).unwrap();
    assert_eq!(rep.bad_scale_indices, [3]);
}

#[test]
fn scale_kind_names_in_configs() {
    // `po2` and the old `e8_m0` are read; `e8m0` is written.
    for (text, want) in [
        (
            r#"{"kind":"po2","rounding":"ceil"}"#,
            ScaleKind::PowerOfTwo {
                rounding: Po2Rounding::Ceil,
            },
        ),
        (
            r#"{"kind":"power_of_two","rounding":"ceil"}"#,
            ScaleKind::PowerOfTwo {
                rounding: Po2Rounding::Ceil,
            },
        ),
        (
            r#"{"kind":"e8m0","rounding":"rceil"}"#,
            ScaleKind::E8M0 {
                rounding: E8m0Rounding::RCeil,
            },
        ),
        (
            r#"{"kind":"e8_m0","rounding":"rceil"}"#,
            ScaleKind::E8M0 {
                rounding: E8m0Rounding::RCeil,
            },
        ),
    ] {
        assert_eq!(
            serde_json::from_str::<ScaleKind>(text).unwrap(),
            want,
            "{text}"
        );
    }
    let e8 = ScaleKind::E8M0 {
        rounding: E8m0Rounding::Floor,
    };
    assert_eq!(
        serde_json::to_string(&e8).unwrap(),
        r#"{"kind":"e8m0","rounding":"floor"}"#
    );
}

// ---------- Spec validation ----------

#[test]
fn bad_specs_are_rejected_with_clear_errors() {
    let e = QuantSpec::builder(Format::E4M3FN)
        .per_block(-1, 0)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("block size"), "{e}");
    let e = QuantSpec::builder(Format::E4M3FN)
        .asymmetric(true)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("float format"), "{e}");
    let e = QuantSpec::builder(Format::E8M0).build().unwrap_err();
    assert!(e.to_string().contains("scale format"), "{e}");
    let e = "mxfp5".parse::<QuantSpec>().unwrap_err();
    assert!(e.to_string().contains("known presets"), "{e}");
    assert!(e.to_string().contains("(did you mean `mxfp4`?)"), "{e}");
    // A format name that is not a preset: the builder's per-tensor defaults.
    assert_eq!(
        "float8_e4m3b11fnuz".parse::<QuantSpec>().unwrap(),
        QuantSpec::builder(Format::E4M3B11FNUZ).build().unwrap()
    );
    assert_eq!(
        "int8".parse::<QuantSpec>().unwrap(),
        QuantSpec::preset("int8").unwrap()
    );
    let e = "e8m0".parse::<QuantSpec>().unwrap_err();
    assert!(e.to_string().contains("scale format"), "{e}");
    // A mapping needs only the format; the rest defaults like the builder.
    let partial: QuantSpec = serde_json::from_str(r#"{"format":"e2m1"}"#).unwrap();
    assert_eq!(partial, QuantSpec::builder(Format::E2M1).build().unwrap());
    assert!(serde_json::from_str::<QuantSpec>(r#"{"scale":{"kind":"f32"}}"#).is_err());
    let spec = QuantSpec::builder(Format::INT8)
        .per_channel(2)
        .build()
        .unwrap();
    let e = spec
        .fake_quantize(&[0.0; 4], &[2, 2], &mut [0.0; 4])
        .unwrap_err();
    assert!(
        matches!(
            e,
            QuantError::AxisOutOfRange {
                axis: 2,
                rank: 2,
                ..
            }
        ),
        "{e}"
    );
    let e = spec
        .to_builder()
        .per_channel(0)
        .build()
        .unwrap()
        .fake_quantize(&[0.0; 4], &[2, 3], &mut [0.0; 4])
        .unwrap_err();
    assert!(e.to_string().contains("length mismatch"), "{e}");
    let stat = spec
        .to_builder()
        .per_channel(0)
        .mode(ScaleMode::Static)
        .build()
        .unwrap();
    assert!(matches!(
        stat.fake_quantize(&[0.0; 4], &[2, 2], &mut [0.0; 4]),
        Err(QuantError::StaticNeedsScales { .. })
    ));
}

#[test]
fn partial_blocks_get_their_own_scale() {
    // Row of 40 in blocks of 32: blocks of 32 and 8.
    let spec: QuantSpec = "mxfp4".parse().unwrap();
    let mut x = vec![1.0f32; 80];
    x[35] = 100.0;
    x[79] = 0.75;
    let s = spec.compute_scales(&x, &[2, 40]).unwrap();
    assert_eq!(s.shape, [2, 2]);
    assert_eq!(s.values, [0.25, 16.0, 0.25, 0.25]);
    let q = fq(&spec, &x, &[2, 40]);
    assert_eq!(q[0], 1.0);
    assert_eq!(q[36], 0.0); // 1/16 → 0.0625 < 0.25 → 0
    assert_eq!(q[79], 0.75);
}

#[test]
fn presets_parse_print_and_roundtrip_serde() {
    for (name, spec) in QuantSpec::presets() {
        let json = serde_json::to_string(&spec).unwrap();
        let back: QuantSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec, "{name}");
        assert!(!spec.to_string().is_empty());
    }
    assert_eq!(QuantSpec::presets().count(), PRESETS.len());
    let bad = r#"{"format":"e8m0","conversion":{"rounding":{"mode":"nearest_even"},"overflow":"saturate"},"granularity":{"kind":"per_tensor"},"scale":{"kind":"f32"}}"#;
    assert!(serde_json::from_str::<QuantSpec>(bad).is_err());
}

// ---------- Properties ----------

fn specs() -> Vec<QuantSpec> {
    let mut v: Vec<QuantSpec> = QuantSpec::presets().map(|(_, s)| s).collect();
    v.push(
        QuantSpec::builder(Format::INT8)
            .asymmetric(true)
            .narrow_range(false)
            .per_channel(-1)
            .build()
            .unwrap(),
    );
    v.push(
        QuantSpec::builder(Format::E2M1)
            .per_block(0, 4)
            .scale(ScaleKind::E8M0 {
                rounding: E8m0Rounding::Floor,
            })
            .build()
            .unwrap(),
    );
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn fake_quant_is_idempotent_and_matches_dequantize(seed in any::<u64>(), which in 0usize..14) {
        let specs = specs();
        let spec = specs[which % specs.len()];
        let mut r = Rng(seed);
        let shape = [4usize, 8, 64];
        let x: Vec<f32> = (0..2048).map(|_| r.student_t(3) * 3.0).collect();
        let q = fq(&spec, &x, &shape);
        let sc = spec.compute_scales(&x, &shape).unwrap();
        let mut qq = vec![0.0; q.len()];
        spec.fake_quantize_with_scales(&q, &shape, &sc, &mut qq).unwrap();
        prop_assert_eq!(&q, &qq, "{}", spec);
        let t = spec.quantize(&x, &shape).unwrap();
        prop_assert_eq!(t.dequantize().unwrap(), q.clone());
        let rep = check_compliance(&spec, &q, &shape, &sc).unwrap();
        prop_assert!(rep.is_compliant(), "{} {:?}", spec, rep);
    }

    #[test]
    fn error_at_most_half_a_step_in_range(seed in any::<u64>()) {
        // INT8 per tensor, f32 scale: step = s, all values in range.
        let spec: QuantSpec = "fp8_e4m3".parse().unwrap();
        let int8 = spec.to_builder().format(Format::INT8).build().unwrap();
        let mut r = Rng(seed);
        let x: Vec<f32> = (0..1000).map(|_| r.normal() as f32).collect();
        let s = int8.compute_scales(&x, &[1000]).unwrap().values[0];
        let q = fq(&int8, &x, &[1000]);
        for (a, b) in x.iter().zip(&q) {
            prop_assert!((a - b).abs() <= 0.5 * s * (1.0 + 1e-6) + a.abs() * 1e-6); // + the rounding of x·(1/s) and q·s
        }
        // E4M3 per tensor: half the local step (the gap between the two table neighbours).
        let sc = spec.compute_scales(&x, &[1000]).unwrap().values[0];
        let table = Format::E4M3FN.value_table();
        let q = fq(&spec, &x, &[1000]);
        for (a, b) in x.iter().zip(&q) {
            let t = table.as_slice();
            let r = (a / sc).clamp(-448.0, 448.0);
            let i = t.partition_point(|v| *v < r).clamp(1, t.len() - 2);
            let step = (t[i] - t[i - 1]).max(t[i + 1] - t[i]) * sc;
            prop_assert!((a - b).abs() <= 0.5 * step * (1.0 + 1e-5) + 1e-30);
        }
    }

    #[test]
    fn per_channel_equals_per_tensor_per_channel(seed in any::<u64>(), axis in 0isize..3) {
        let spec = QuantSpec::builder(Format::INT8).per_channel(axis).build().unwrap();
        let pt = QuantSpec::builder(Format::INT8).build().unwrap();
        let shape = [3usize, 5, 7];
        let mut r = Rng(seed);
        let x: Vec<f32> = (0..105).map(|_| r.laplace()).collect();
        let q = fq(&spec, &x, &shape);
        let a = axis as usize;
        for c in 0..shape[a] {
            let idx: Vec<usize> = (0..105).filter(|&i| {
                let coord = [i / 35, (i / 7) % 5, i % 7];
                coord[a] == c
            }).collect();
            let xc: Vec<f32> = idx.iter().map(|&i| x[i]).collect();
            let qc = fq(&pt, &xc, &[xc.len()]);
            for (k, &i) in idx.iter().enumerate() {
                prop_assert_eq!(q[i], qc[k]);
            }
        }
    }
}

// ---------- Calibrators ----------

#[test]
fn percentile_within_documented_bound() {
    let spec: QuantSpec = "fp8_e4m3".parse().unwrap();
    let mut r = Rng(7);
    let batches: Vec<Vec<f32>> = (0..4)
        .map(|b| (0..50_000).map(|_| r.laplace() * (1 + b) as f32).collect())
        .collect();
    for p in [50.0, 99.0, 99.9, 99.99, 100.0] {
        let bins = 4096;
        let mut cal = Calibrator::new(
            spec,
            Method::Percentile {
                percentile: p,
                bins,
            },
        );
        for b in &batches {
            cal.observe(b, &[b.len()]).unwrap();
        }
        let mut all: Vec<f32> = batches.iter().flatten().map(|x| x.abs()).collect();
        all.sort_by(f32::total_cmp);
        let n = all.len();
        let rank = ((p / 100.0 * n as f64).ceil() as usize).clamp(1, n);
        let exact = all[rank - 1];
        let amax = all[n - 1];
        let est = cal.freeze().unwrap().scales.values[0] * 448.0;
        let bound = 2.0 * amax / bins as f32;
        assert!(
            est >= exact * (1.0 - 1e-6) && est - exact <= bound * (1.0 + 1e-5),
            "p {p}: est {est} exact {exact} bound {bound}"
        );
    }
}

#[test]
fn percentile_threaded_single_read_equals_small_batches() {
    // One batch large enough for the threaded, single-read histogram (group ≥ 2^17 values)
    // against the same values in small batches (the serial path); the histogram merges bins
    // exactly as its range grows, so both give the same estimates. With and without
    // non-finite values (which the histogram skips and the max method reports as NaN).
    let spec: QuantSpec = "fp8_e4m3".parse().unwrap();
    let mut r = Rng(11);
    let n = 600_000;
    let clean: Vec<f32> = (0..n).map(|_| r.student_t(3) * 2.0).collect();
    let mut dirty = clean.clone();
    dirty[1234] = f32::INFINITY;
    dirty[400_000] = f32::NEG_INFINITY;
    for x in [clean, dirty] {
        for p in [50.0, 99.0, 99.99, 100.0] {
            let m = Method::Percentile {
                percentile: p,
                bins: 2048,
            };
            let mut big = Calibrator::new(spec, m);
            big.observe(&x, &[n]).unwrap();
            let mut small = Calibrator::new(spec, m);
            for c in x.chunks(25_000) {
                small.observe(c, &[c.len()]).unwrap();
            }
            let (a, b) = (big.freeze().unwrap(), small.freeze().unwrap());
            assert_eq!(
                a.scales.values[0].to_bits(),
                b.scales.values[0].to_bits(),
                "p {p}"
            );
            // Documented bound against the exact nearest rank of the finite |x|.
            let mut all: Vec<f32> = x
                .iter()
                .filter(|v| v.is_finite())
                .map(|v| v.abs())
                .collect();
            all.sort_by(f32::total_cmp);
            let rank = ((p / 100.0 * n as f64).ceil() as usize).clamp(1, all.len());
            let exact = all[rank - 1];
            let est = a.scales.values[0] * 448.0;
            let bound = 2.0 * all[all.len() - 1] / 2048.0;
            assert!(
                est >= exact * (1.0 - 1e-6) && est - exact <= bound * (1.0 + 1e-5),
                "p {p}: est {est} exact {exact} bound {bound}"
            );
        }
        let mut mx = Calibrator::new(spec, Method::Max);
        mx.observe(&x, &[n]).unwrap();
        let want = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let got = mx.freeze().unwrap().scales.values[0];
        if want.is_finite() {
            assert_eq!(got, want / 448.0);
        } else {
            assert!(got.is_nan());
        }
    }
}

fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn mse_and_entropy_beat_max_on_heavy_tails() {
    let mut r = Rng(11);
    for (name, data, format) in [
        (
            "laplace int8",
            (0..200_000).map(|_| r.laplace()).collect::<Vec<f32>>(),
            Format::INT8,
        ),
        (
            "laplace int4",
            (0..200_000).map(|_| r.laplace()).collect::<Vec<f32>>(),
            Format::INT4,
        ),
        (
            "student-t(3) int4",
            (0..200_000).map(|_| r.student_t(3)).collect::<Vec<f32>>(),
            Format::INT4,
        ),
        (
            "student-t(3) e2m1",
            (0..200_000).map(|_| r.student_t(3)).collect::<Vec<f32>>(),
            Format::E2M1,
        ),
    ] {
        let spec = QuantSpec::builder(format).build().unwrap();
        let err = |m: Method| {
            let mut cal = Calibrator::new(spec, m);
            for chunk in data.chunks(50_000) {
                cal.observe(chunk, &[chunk.len()]).unwrap();
            }
            let f = cal.freeze().unwrap();
            let mut q = vec![0.0; data.len()];
            f.fake_quantize(&data, &[data.len()], &mut q).unwrap();
            mse(&data, &q)
        };
        let (emax, emse, ekl) = (err(Method::Max), err(Method::mse()), err(Method::entropy()));
        eprintln!("{name}: max {emax:.3e} mse {emse:.3e} kl {ekl:.3e}");
        assert!(emse < emax, "{name}: mse {emse} max {emax}");
        assert!(ekl < emax, "{name}: kl {ekl} max {emax}");
    }
}

#[test]
fn calibrators_freeze_serialize_and_reject_misuse() {
    let spec = QuantSpec::builder(Format::INT8)
        .per_channel(-1)
        .build()
        .unwrap();
    let mut cal = Calibrator::new(spec, Method::MovingAverage { constant: 0.5 });
    cal.observe(&[1.0, -2.0, 3.0, 4.0], &[2, 2]).unwrap();
    cal.observe(&[3.0, -2.0, 3.0, 8.0], &[2, 2]).unwrap();
    let f = cal.freeze().unwrap();
    // channel 0: min 1 → 1 + .5(1 − 1)… max 3 → 3; amax from min/max: max(|1|,|3|)=3? first batch min 1 max 3, second min 3 max 3 → min 2, max 3.
    assert_eq!(f.scales.values, [3.0 / 127.0, 6.0 / 127.0]);
    let back = Frozen::from_json(&f.to_json().unwrap()).unwrap();
    assert_eq!(back, f);
    assert_eq!(back.spec.mode(), ScaleMode::Static);
    let e = cal.observe(&[0.0; 6], &[2, 3]).unwrap_err();
    assert!(e.to_string().contains("groups"), "{e}");
    let po2 = Calibrator::new(spec, Method::Max).with_power_of_two(Po2Rounding::Ceil);
    let mut po2 = po2;
    po2.observe(&[1.0, 3.0], &[1, 2]).unwrap();
    assert_eq!(
        po2.freeze().unwrap().scales.values,
        [2f32.powi(-6), 2f32.powi(-5)]
    ); // 1/127 → 2^-6, 3/127 → 2^-5
    let asym = QuantSpec::builder(Format::int(8, false, false).unwrap())
        .asymmetric(true)
        .build()
        .unwrap();
    assert!(
        Calibrator::new(asym, Method::entropy())
            .observe(&[1.0], &[1])
            .is_err()
    );
}

// ---------- Compliance ----------

#[test]
fn compliance_catches_every_planted_violation() {
    for name in [
        "mxfp4",
        "mxfp8_e4m3",
        "nvfp4",
        "int4_g128",
        "fp8_e4m3_chunk128_po2",
        "mxint8",
    ] {
        let spec: QuantSpec = name.parse().unwrap();
        let mut r = Rng(3);
        let x: Vec<f32> = (0..1024).map(|_| r.laplace()).collect();
        let mut q = vec![0.0; 1024];
        let mut sc = spec
            .fake_quantize_returning_scales(&x, &[4, 256], &mut q)
            .unwrap();
        assert!(
            check_compliance(&spec, &q, &[4, 256], &sc)
                .unwrap()
                .is_compliant(),
            "{name}"
        );
        let planted_elems = [5usize, 100, 513, 1000];
        for &i in &planted_elems {
            // Nudge by one ulp, away from any grid value.
            q[i] = f32::from_bits(q[i].to_bits() + 1) * 1.0001 + 1e-3;
        }
        let n_scales = sc.values.len();
        let planted_scales = [0usize, n_scales - 1];
        for &i in &planted_scales {
            sc.values[i] *= 1.01; // breaks po2 / E8M0 / E4M3 (F32 scales stay valid: fix below)
        }
        let rep = check_compliance(&spec, &q, &[4, 256], &sc).unwrap();
        if matches!(spec.scale(), ScaleKind::F32) {
            assert_eq!(rep.bad_scales, 0, "{name}");
        } else {
            assert_eq!(rep.bad_scale_indices, planted_scales, "{name}");
        }
        for &i in &planted_elems {
            assert!(
                rep.off_grid_indices.contains(&i),
                "{name}: element {i} not caught: {rep:?}"
            );
        }
    }
    // Repeated values (the checker remembers values it found on the grid): a violation that
    // repeats is counted every time, and a value on the grid of one scale but not another is
    // judged per scale.
    let spec: QuantSpec = "int8".parse().unwrap();
    let sc = lowbit_quant::Scales {
        shape: vec![2],
        values: vec![0.5, 0.75],
        zero_points: None,
        tensor_scale: None,
    };
    // Row 0 (scale 0.5): 1.5 is on the grid (3 · 0.5). Row 1 (scale 0.75): 1.5 is 2 · 0.75, on
    // the grid too, but 1.0 is not (4/3).
    let mut q = vec![1.5f32; 8];
    q.extend([1.5, 1.0, 1.5, 1.0, 1.0, 1.5, 1.5, 1.5]);
    let rep = check_compliance(&spec, &q, &[2, 8], &sc).unwrap();
    assert_eq!(rep.off_grid, 3);
    assert_eq!(rep.off_grid_indices, vec![9, 11, 12]);
    // F32 scales: negative, zero, inf and NaN break the constraint.
    assert!(!scale_is_valid(ScaleKind::F32, -1.0));
    assert!(!scale_is_valid(ScaleKind::F32, 0.0));
    assert!(!scale_is_valid(ScaleKind::F32, f32::INFINITY));
    assert!(!scale_is_valid(
        ScaleKind::PowerOfTwo {
            rounding: Po2Rounding::Ceil
        },
        0.75
    ));
    assert!(scale_is_valid(
        ScaleKind::E8M0 {
            rounding: E8m0Rounding::Floor
        },
        2f32.powi(-127)
    ));
    assert!(!scale_is_valid(
        ScaleKind::Nvfp4 {
            block_rounding: E4m3Rounding::Nearest
        },
        1.1
    ));
}

// ---------- Storage and reports ----------

#[test]
fn safetensors_roundtrip_every_preset() {
    let mut r = Rng(5);
    let x: Vec<f32> = (0..8 * 256).map(|_| r.laplace()).collect();
    let dir = std::env::temp_dir().join(format!("lowbit-quant-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, spec) in QuantSpec::presets() {
        let t = spec.quantize(&x, &[8, 256]).unwrap();
        let path = dir.join(format!("{name}.safetensors"));
        t.save(&path).unwrap();
        let back = QuantizedTensor::load(&path).unwrap();
        assert_eq!(back, t, "{name}");
        assert_eq!(
            back.dequantize().unwrap(),
            fq(&spec, &x, &[8, 256]),
            "{name}"
        );
        assert_eq!(
            t.packed_codes().len(),
            8 * 256 * spec.format().bits() as usize / 8
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn shift_report_for_po2_scales() {
    let spec: QuantSpec = "fp8_e4m3_chunk128_po2".parse().unwrap();
    let x = vec![0.5f32; 128]; // 0.5/448 → ceil → 2^-9
    let sc = spec.compute_scales(&x, &[128]).unwrap();
    let rep = shift_report(&spec, &sc).unwrap();
    assert_eq!(rep[0].k, 9);
    assert_eq!(rep[0].power, "2^(-9)");
    assert_eq!(rep[0].shift, "x >> 9");
    assert_eq!(rep[0].bit_width, 8);
    let json = serde_json::to_string(&rep[0]).unwrap();
    assert!(json.contains("\"shift\":\"x >> 9\""));
    let f32spec: QuantSpec = "fp8_e4m3".parse().unwrap();
    let sc = f32spec.compute_scales(&[3.0], &[1]).unwrap();
    assert!(matches!(
        shift_report(&f32spec, &sc),
        Err(QuantError::NotPowerOfTwo { .. })
    ));
}

#[test]
fn ndarray_view_matches_slices() {
    let spec: QuantSpec = "int4_g128".parse().unwrap();
    let a = ndarray::Array2::<f32>::from_shape_fn((4, 256), |(i, j)| ((i * 256 + j) as f32).sin());
    let q = spec.fake_quantize_view(a.view().into_dyn()).unwrap();
    let flat: Vec<f32> = a.iter().copied().collect();
    assert_eq!(
        q.iter().copied().collect::<Vec<_>>(),
        fq(&spec, &flat, &[4, 256])
    );
    // A transposed (non-contiguous) view.
    let t = a.t();
    let qt = spec.fake_quantize_view(t.into_dyn()).unwrap();
    let flat_t: Vec<f32> = t.iter().copied().collect();
    assert_eq!(
        qt.iter().copied().collect::<Vec<_>>(),
        fq(&spec, &flat_t, &[256, 4])
    );
}
