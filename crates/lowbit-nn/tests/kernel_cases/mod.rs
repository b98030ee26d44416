//! The device test bodies, one per check, run by every device the kernels have: the GPU
//! (`cuda.rs`, feature `cuda`) and the host emulator of the same kernel source
//! (`cuda_emulator.rs`). Each body compares a [`Runner`] against an independent reference:
//! the ml_dtypes golden tables, the scalar reference of lowbit-formats, the CPU engine of
//! lowbit-quant (through the CPU `FakeQuant` op), or values derived by hand from the OCP MX
//! and NVFP4 definitions.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use lowbit_formats::{Conversion, Format, Overflow, Rounding, stochastic_bits};
use lowbit_nn::{FakeQuant, Ste};
use lowbit_quant::{
    E4m3Rounding, E8m0Rounding, Granularity, Po2Rounding, QuantSpec, ScaleKind, ScaleMode,
};

#[path = "../../../lowbit-formats/tests/common/mod.rs"]
mod formats_common;
pub use formats_common::{GOLDEN, SplitMix, boundary_inputs, class_inputs, golden_code};

/// A device that runs the fake-quant kernels. Outputs are f32 bit patterns (f16/bf16 outputs
/// widened exactly).
pub trait Runner {
    /// The bare element cast (`ElementQuant`) of `x`.
    fn cast(&self, x: &[f32], format: Format, conv: Conversion) -> Vec<u32>;
    /// `op` on `x` of shape `shape` and type `dtype`, stored `start` elements into its
    /// buffer.
    fn fake_quant(
        &self,
        op: &FakeQuant,
        x: &[f32],
        shape: &[usize],
        dtype: DType,
        start: usize,
    ) -> Vec<u32>;
    /// The clipped-STE mask of `op` on `x` (the gradient of `sum(op(x))`: 1 or 0 per element).
    fn ste_mask(&self, op: &FakeQuant, x: &[f32], shape: &[usize]) -> Vec<u32>;
}

/// The golden tables of lowbit-formats (`LOWBIT_GOLDEN_DIR` overrides the path, for test
/// binaries run away from the source tree).
pub fn golden(stem: &str, ext: &str) -> Vec<(u32, u32)> {
    let dir = std::env::var("LOWBIT_GOLDEN_DIR").unwrap_or_else(|_| {
        format!(
            "{}/../lowbit-formats/tests/golden",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    let path = format!("{dir}/{stem}.{ext}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split_whitespace();
            (
                u32::from_str_radix(it.next().unwrap(), 16).unwrap(),
                u32::from_str_radix(it.next().unwrap(), 16).unwrap(),
            )
        })
        .collect()
}

/// f32 bits of a tensor (any device, f32/f16/bf16).
pub fn bits(t: &Tensor) -> Vec<u32> {
    t.to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// `None` when `got == want`, else a description of the first difference.
pub fn diff(got: &[u32], want: &[u32], inputs: &[u32], what: &str) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!(
            "{what}: {} values, expected {}",
            got.len(),
            want.len()
        ));
    }
    let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
    bad.first().map(|&i| {
        format!(
            "{what}: {} of {} elements differ; first at {i}: input {:#010x} → device {:#010x}, reference {:#010x}",
            bad.len(),
            got.len(),
            inputs.get(i).copied().unwrap_or(0),
            got[i],
            want[i]
        )
    })
}

pub fn assert_same(got: &[u32], want: &[u32], inputs: &[u32], what: &str) {
    if let Some(d) = diff(got, want, inputs, what) {
        panic!("{d}");
    }
}

/// The bare cast against ml_dtypes' tables for its 9 formats: every run boundary of the f32
/// line ±2, every value and midpoint ±1 ulp, 2^16 top halves × 6 low halves, specials, NaN
/// payloads; every code casts to itself.
pub fn golden_casts(r: &dyn Runner) {
    for (stem, f) in GOLDEN {
        let runs = golden(stem, "runs");
        let table: Vec<u32> = golden(stem, "decode").into_iter().map(|(_, v)| v).collect();
        let mut inputs = boundary_inputs(&runs);
        inputs.extend(class_inputs(&f).iter().map(|x| x.to_bits()));
        let xs: Vec<f32> = inputs.iter().map(|&b| f32::from_bits(b)).collect();
        let want: Vec<u32> = inputs
            .iter()
            .map(|&b| table[golden_code(&runs, b) as usize])
            .collect();
        let got = r.cast(&xs, f, Conversion::REFERENCE);
        assert_same(&got, &want, &inputs, &format!("{stem} vs ml_dtypes"));
        let vals: Vec<f32> = table.iter().map(|&b| f32::from_bits(b)).collect();
        let got = r.cast(&vals, f, Conversion::REFERENCE);
        let nan_eq: Vec<u32> = got
            .iter()
            .zip(&table)
            .map(|(&g, &w)| {
                if f32::from_bits(w).is_nan() && f32::from_bits(g).is_nan() {
                    w
                } else {
                    g
                }
            })
            .collect();
        assert_same(&nan_eq, &table, &table, &format!("{stem} codes"));
    }
}

/// Every named format plus integers, full-range and odd minifloats.
pub fn all_formats() -> Vec<Format> {
    let mut v: Vec<Format> = Format::named().collect();
    for name in [
        "int2",
        "int3",
        "int4",
        "int8",
        "int16",
        "uint4",
        "uint8",
        "int8_full",
        "int4_full",
        "e5m10",
        "e3m4",
        "e2m5",
        "e4m3_b11_fnuz",
        "e6m1",
        "e5m2_fn",
        "e3m3_ieee",
        "e4m0_fn",
        "e8m7",
    ] {
        v.push(name.parse().unwrap_or_else(|e| panic!("{name}: {e}")));
    }
    v
}

/// 4 roundings (stochastic included) × 2 overflow policies.
pub fn conversions() -> Vec<Conversion> {
    let mut v = Vec::new();
    for rounding in [
        Rounding::NearestEven,
        Rounding::NearestAway,
        Rounding::TowardZero,
        Rounding::Stochastic { seed: 0x5EED },
    ] {
        for overflow in [Overflow::Reference, Overflow::Saturate] {
            v.push(Conversion::new(rounding, overflow));
        }
    }
    v
}

/// The bare cast against `Format::quantize_with` for every format and conversion, on the
/// format's class inputs (`sample` = `None`: all of them; `Some(k)`: every value, midpoint and
/// special plus `k` of the 2^16 × 6 sweep) and 65 536 random bit patterns.
pub fn scalar_reference_casts(r: &dyn Runner, sample: Option<usize>) {
    let mut rng = SplitMix(11);
    for f in all_formats() {
        let mut xs = class_inputs(&f);
        if let Some(k) = sample {
            // The sweep comes first (6 · 2^16 values); keep a strided sample of it.
            let sweep = 6 << 16;
            let step = (sweep / k.max(1)).max(1);
            let rest = xs.split_off(sweep);
            xs = xs.into_iter().step_by(step).chain(rest).collect();
        }
        xs.extend((0..1 << 16).map(|_| f32::from_bits(rng.next_u32())));
        let inputs: Vec<u32> = xs.iter().map(|x| x.to_bits()).collect();
        for conv in conversions() {
            let want: Vec<u32> = xs
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    let rand = match conv.rounding {
                        Rounding::Stochastic { seed } => stochastic_bits(seed, i as u64),
                        _ => 0,
                    };
                    f.quantize_with(x, conv, rand).to_bits()
                })
                .collect();
            let got = r.cast(&xs, f, conv);
            assert_same(&got, &want, &inputs, &format!("{f} {conv:?}"));
        }
    }
}

/// Test data of `n` elements: Gaussian-like values whose magnitude changes every 64 elements
/// over 2^-140 .. 2^120, with planted zero blocks, ±inf, NaN, f32::MAX, subnormals and the
/// 957-in-an-MX-block outlier.
pub fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut r = SplitMix(seed);
    let mut u = || (r.next_u32() as f64 + 0.5) / 4_294_967_296.0;
    let mut v: Vec<f32> = (0..n)
        .map(|i| {
            let g = (-2.0 * u().ln()).sqrt() * (std::f64::consts::TAU * u()).cos();
            let e = ((i / 64) * 37 % 260) as i32 - 140;
            (g * 2f64.powi(e.clamp(-140, 120))) as f32
        })
        .collect();
    for x in v.iter_mut().take(32) {
        *x = 0.0;
    }
    let mut plant = |i: usize, x: f32| {
        if i < n {
            v[i] = x;
        }
    };
    plant(40, 957.0);
    plant(41, 17.0);
    plant(100, f32::INFINITY);
    plant(170, f32::NAN);
    plant(171, -f32::NAN);
    plant(230, f32::NEG_INFINITY);
    plant(300, f32::MAX);
    plant(301, -f32::MAX);
    plant(400, f32::from_bits(1));
    plant(401, -f32::from_bits(0x7F_FFFF));
    plant(402, f32::MIN_POSITIVE);
    plant(500, -0.0);
    v
}

/// Finite test data of `n` elements: Gaussian values whose scale changes every 64 elements over
/// 2^-8 .. 2^8, no specials. Per-tensor scales and NVFP4's tensor scale are finite on it
/// ([`data`] plants inf/NaN, which make every per-tensor scale NaN).
pub fn finite_data(n: usize, seed: u64) -> Vec<f32> {
    let mut r = SplitMix(seed);
    let mut u = || (r.next_u32() as f64 + 0.5) / 4_294_967_296.0;
    (0..n)
        .map(|i| {
            let g = (-2.0 * u().ln()).sqrt() * (std::f64::consts::TAU * u()).cos();
            let e = ((i / 64) * 5 % 17) as i32 - 8;
            (g * 2f64.powi(e)) as f32
        })
        .collect()
}

/// Both data sets: with specials and finite.
pub fn data_sets(n: usize, seed: u64) -> [Vec<f32>; 2] {
    [data(n, seed), finite_data(n, seed)]
}

pub fn spec(name: &str) -> QuantSpec {
    name.parse().unwrap()
}

/// All presets and ~120 variants: every E8M0 and power-of-two rule, NVFP4 round-up,
/// asymmetric, stochastic, 9 granularities (blocks along axes 0/1, partial blocks, whole
/// axis), other conversions.
pub fn variants() -> Vec<QuantSpec> {
    let mut v: Vec<QuantSpec> = QuantSpec::presets().map(|(_, s)| s).collect();
    let b = |s: &str| spec(s).to_builder();
    for r in [E8m0Rounding::Ceil, E8m0Rounding::Even, E8m0Rounding::RCeil] {
        for base in ["mxfp8_e4m3", "mxfp4", "mxfp6_e3m2", "mxint8"] {
            v.push(
                b(base)
                    .scale(ScaleKind::E8M0 { rounding: r })
                    .build()
                    .unwrap(),
            );
        }
    }
    v.push(
        b("nvfp4")
            .scale(ScaleKind::Nvfp4 {
                block_rounding: E4m3Rounding::Up,
            })
            .build()
            .unwrap(),
    );
    // One level of E4M3 scales (torchao NVFP4 without a tensor scale), both roundings.
    for (base, rounding) in [
        ("nvfp4", E4m3Rounding::Nearest),
        ("nvfp4", E4m3Rounding::Up),
        ("mxfp4", E4m3Rounding::Nearest),
        ("int8", E4m3Rounding::Nearest),
    ] {
        v.push(b(base).scale(ScaleKind::E4M3 { rounding }).build().unwrap());
    }
    for r in [Po2Rounding::Floor, Po2Rounding::Ceil, Po2Rounding::Nearest] {
        v.push(
            b("fp8_e4m3")
                .scale(ScaleKind::PowerOfTwo { rounding: r })
                .build()
                .unwrap(),
        );
        v.push(
            b("int8")
                .scale(ScaleKind::PowerOfTwo { rounding: r })
                .asymmetric(true)
                .build()
                .unwrap(),
        );
    }
    let stochastic = Conversion::new(Rounding::Stochastic { seed: 99 }, Overflow::Saturate);
    for base in ["mxfp4", "int8", "fp8_e5m2", "int4_g128", "nvfp4"] {
        v.push(b(base).conversion(stochastic).build().unwrap());
    }
    for g in [
        Granularity::PerTensor,
        Granularity::PerChannel { axis: 1 },
        Granularity::PerChannel { axis: -1 },
        Granularity::PerBlock { axis: 0, size: 16 },
        Granularity::PerBlock { axis: 1, size: 8 },
        Granularity::PerBlock { axis: -1, size: 24 },
        Granularity::PerBlock {
            axis: -1,
            size: 1000,
        },
        Granularity::WholeAxis { axis: -1 },
        Granularity::WholeAxis { axis: 0 },
    ] {
        v.push(b("int8").granularity(g).asymmetric(true).build().unwrap());
        v.push(
            b("int4_g128")
                .granularity(g)
                .conversion(stochastic)
                .build()
                .unwrap(),
        );
        v.push(b("mxfp8_e4m3").granularity(g).build().unwrap());
        v.push(b("fp8_e4m3").granularity(g).build().unwrap());
    }
    // 2-D tiles: gathered into the tile-major matrix on the device, blocks of a whole tile
    // there (32 elements: the fused kernel; others: reduction and element kernel).
    for (base, rows, cols) in [
        ("mxfp4", 4, 8),
        ("nvfp4", 16, 16),
        ("fp8_e4m3", 7, 30),
        ("mxfp8_e5m2", 1, 32),
    ] {
        v.push(b(base).per_tile(rows, cols).build().unwrap());
    }
    v.push(b("int8").per_tile(3, 5).asymmetric(true).build().unwrap());
    v.push(
        b("int4_g128")
            .per_tile(2, 16)
            .conversion(stochastic)
            .build()
            .unwrap(),
    );
    v.push(
        b("fp8_e5m2")
            .per_tile(5, 3)
            .conversion(stochastic)
            .build()
            .unwrap(),
    );
    for c in [
        Conversion::REFERENCE,
        Conversion::new(Rounding::NearestAway, Overflow::Saturate),
        Conversion::new(Rounding::TowardZero, Overflow::Reference),
    ] {
        v.push(b("fp8_e4m3").conversion(c).build().unwrap());
        v.push(b("mxfp8_e5m2").conversion(c).build().unwrap());
    }
    v
}

pub fn fq(spec: QuantSpec, scales: Option<Arc<lowbit_quant::Scales>>) -> FakeQuant {
    FakeQuant {
        spec,
        scales,
        ste: Ste::Clipped,
        grad_spec: None,
    }
}

/// Whether a spec can run on a shape (its axis must exist).
pub fn fits(s: &QuantSpec, shape: &[usize]) -> bool {
    let axis = match s.granularity() {
        Granularity::PerTensor | Granularity::PerTile { .. } => return true,
        Granularity::PerChannel { axis }
        | Granularity::PerBlock { axis, .. }
        | Granularity::WholeAxis { axis } => axis,
    };
    let rank = shape.len() as isize;
    (-rank..rank).contains(&axis)
}

/// The device and the CPU op on the same values give the same bits (`Some(difference)` if
/// not). Static specs get the scales the CPU engine computes for `x`.
pub fn check(
    r: &dyn Runner,
    spec: QuantSpec,
    shape: &[usize],
    x: &[f32],
    dtype: DType,
    start: usize,
) -> Option<String> {
    check_with(r, spec, shape, x, dtype, start, None)
}

/// [`check`] with the given frozen scales (`None`: a static spec gets the scales the CPU
/// engine computes for `x`).
pub fn check_with(
    r: &dyn Runner,
    spec: QuantSpec,
    shape: &[usize],
    x: &[f32],
    dtype: DType,
    start: usize,
    frozen: Option<Arc<lowbit_quant::Scales>>,
) -> Option<String> {
    let cpu = Tensor::from_slice(x, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let computed = || {
        let host = cpu
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        Arc::new(
            spec.to_builder()
                .mode(ScaleMode::Dynamic)
                .build()
                .unwrap()
                .compute_scales(&host, shape)
                .unwrap(),
        )
    };
    let frozen = frozen.or_else(|| (spec.mode() == ScaleMode::Static).then(computed));
    let inputs: Vec<u32> = x.iter().map(|v| v.to_bits()).collect();
    let op = fq(spec, frozen);
    let want = bits(&cpu.apply_op1_no_bwd(&op).unwrap());
    let got = r.fake_quant(&op, x, shape, dtype, start);
    diff(
        &got,
        &want,
        &inputs,
        &format!("{spec} {shape:?} {dtype:?} start {start}"),
    )
}

/// Every variant, dynamic and static, on `shapes`, on data with specials and on finite data;
/// f16/bf16 inputs for five presets.
pub fn every_quantizer(r: &dyn Runner, shapes: &[&[usize]]) {
    let mut count = 0;
    let mut failures = Vec::new();
    for s in variants() {
        for (k, shape) in shapes.iter().enumerate() {
            let n: usize = shape.iter().product();
            if fits(&s, shape) {
                for x in data_sets(n, 7 + k as u64) {
                    failures.extend(check(r, s, shape, &x, DType::F32, 0));
                    let frozen = s.to_builder().mode(ScaleMode::Static).build().unwrap();
                    failures.extend(check(r, frozen, shape, &x, DType::F32, 0));
                    count += 2;
                }
            }
        }
    }
    for name in ["mxfp8_e4m3", "nvfp4", "int8", "fp8_e4m3", "mxfp4"] {
        for dtype in [DType::F16, DType::BF16] {
            for x in data_sets(64 * 256, 3) {
                failures.extend(check(r, spec(name), &[64, 256], &x, dtype, 0));
            }
        }
    }
    assert!(count > 200, "{count} cases");
    assert!(
        failures.is_empty(),
        "{} of {count} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Frozen scales computed on finite data, applied to data with ±NaN, ±inf, ±f32::MAX and
/// subnormals (clean scales, unclean elements: dynamic scales of such data are NaN, so only
/// frozen ones reach this), then the same with every third scale replaced by an odd value
/// (0, negative, ±inf, ±NaN, subnormal, f32::MAX, 2^127): every variant that fits.
pub fn frozen_scales_on_specials(r: &dyn Runner) {
    let shape = [64usize, 256];
    let n = 64 * 256;
    let clean = finite_data(n, 21);
    let x = data(n, 22);
    let odd = [
        0.0,
        -0.75,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(1),
        3.0e-39,
        f32::MAX,
        2f32.powi(127),
        -6.5e-3,
    ];
    let mut count = 0;
    let mut failures = Vec::new();
    for s in variants() {
        if !fits(&s, &shape) {
            continue;
        }
        let dynamic = s.to_builder().mode(ScaleMode::Dynamic).build().unwrap();
        let frozen = s.to_builder().mode(ScaleMode::Static).build().unwrap();
        let mut sc = dynamic.compute_scales(&clean, &shape).unwrap();
        let run = |sc: &lowbit_quant::Scales| {
            check_with(
                r,
                frozen,
                &shape,
                &x,
                DType::F32,
                0,
                Some(Arc::new(sc.clone())),
            )
        };
        failures.extend(run(&sc));
        for (i, v) in sc.values.iter_mut().enumerate() {
            if i % 3 == 0 {
                *v = odd[(i / 3) % odd.len()];
            }
        }
        failures.extend(run(&sc));
        count += 2;
    }
    assert!(count > 100, "{count} cases");
    assert!(
        failures.is_empty(),
        "{} of {count} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Rows of 64 on and one ulp beside rounding ties: `(k + ½) · s` for `k = −32 … 31` with one
/// `s` per row (integer ties under per-channel scales), and blocks whose maximum is `6 · s`
/// holding E2M1 ties `t · s` (`s` = 1 … 1.875, NVFP4 and E4M3 block scales).
pub fn tie_data(rows: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(rows * 64);
    let scales = [0.05f32, 0.1, 0.0625, 1.0 / 3.0, 0.7, 1.5, 2.0, 0.0123];
    for r in 0..rows {
        if r % 2 == 0 {
            let s = scales[(r / 2) % scales.len()];
            for k in 0..64 {
                let x = (k as f32 - 32.0 + 0.5) * s;
                v.push(match k % 3 {
                    0 => f32::from_bits(x.to_bits().wrapping_add(1)),
                    1 => f32::from_bits(x.to_bits().wrapping_sub(1)),
                    _ => x,
                });
            }
        } else {
            for b in 0..4 {
                let s = 1.0 + 0.125 * ((r + b) % 8) as f32;
                v.push(6.0 * s);
                for i in 1..16 {
                    let t = [0.25f32, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0][i % 7];
                    let x = t * s;
                    let x = match i % 3 {
                        0 => f32::from_bits(x.to_bits() + 1),
                        1 => f32::from_bits(x.to_bits() - 1),
                        _ => x,
                    };
                    v.push(if i % 2 == 0 { -x } else { x });
                }
            }
        }
    }
    v
}

/// The rounding conventions on [`tie_data`], against the CPU engine: affine integers add the
/// zero point after rounding (PyTorch), NVFP4 and E4M3 block scales divide (torchao), the
/// others multiply by the reciprocal. A device on another convention differs here.
pub fn rounding_conventions(r: &dyn Runner) {
    let b = |s: &str| spec(s).to_builder();
    let specs = [
        b("uint8").asymmetric(true).build().unwrap(),
        b("uint8").asymmetric(true).per_channel(0).build().unwrap(),
        b("int8_full").asymmetric(true).build().unwrap(),
        spec("int8"),
        spec("nvfp4"),
        b("nvfp4")
            .scale(ScaleKind::E4M3 {
                rounding: E4m3Rounding::Nearest,
            })
            .build()
            .unwrap(),
        spec("fp8_e4m3"),
    ];
    let x = tie_data(16);
    let mut failures = Vec::new();
    for s in specs {
        for frozen in [false, true] {
            let s = if frozen {
                s.to_builder().mode(ScaleMode::Static).build().unwrap()
            } else {
                s
            };
            failures.extend(check(r, s, &[16, 64], &x, DType::F32, 0));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Tensors that start 1..7 elements into their buffer (no vector loads, no fused kernel for
/// unaligned starts) and sizes that are not a multiple of 4.
pub fn offset_inputs(r: &dyn Runner) {
    let mut failures = Vec::new();
    for name in [
        "mxfp8_e4m3",
        "int8",
        "nvfp4",
        "fp8_e4m3",
        "int4_g128",
        "mxfp4",
        "fp8_e4m3_tile128x128",
    ] {
        for start in 0..8 {
            for shape in [&[40, 96][..], &[3, 37]] {
                let n: usize = shape.iter().product();
                for x in data_sets(n, 21 + start as u64) {
                    for dtype in [DType::F32, DType::BF16] {
                        failures.extend(check(r, spec(name), shape, &x, dtype, start));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// OCP MX v1.0 §6.3 and the NVFP4 definition, by hand.
pub fn hand_derived_blocks(r: &dyn Runner) {
    let run = |s: QuantSpec, x: &[f32]| -> Vec<f32> {
        r.fake_quant(&fq(s, None), x, &[x.len()], DType::F32, 0)
            .into_iter()
            .map(f32::from_bits)
            .collect()
    };
    // amax 957 → shared exponent floor(log2 957) − 8 = 1, X = 2; 957/2 = 478.5 saturates to
    // 448 → 896. CEIL and RCEIL: X = 4, 957/4 = 239.25 → 240 → 960.
    let mut block = vec![1.0f32; 32];
    block[5] = 957.0;
    let mx = spec("mxfp8_e4m3");
    assert_eq!(run(mx, &block)[5], 896.0);
    for rr in [E8m0Rounding::Ceil, E8m0Rounding::RCeil] {
        let s = mx
            .to_builder()
            .scale(ScaleKind::E8M0 { rounding: rr })
            .build()
            .unwrap();
        assert_eq!(run(s, &block)[5], 960.0, "{rr:?}");
    }
    // All-zero block → zeros; a block holding inf → NaN everywhere (E8M0 NaN scale).
    assert!(run(mx, &[0.0; 32]).iter().all(|&v| v == 0.0));
    let mut inf = vec![1.0f32; 32];
    inf[0] = f32::INFINITY;
    assert!(run(mx, &inf).iter().all(|v| v.is_nan()));
    // NVFP4: tensor amax 2688 → tensor scale 2688/(448·6) = 1; block scale 2688/6 = 448 (an
    // E4M3 value); elements /448: 6 → 6, 2.23 → 2, 0.22 → 0, 0.67 → 0.5.
    let mut x = vec![0.0f32; 16];
    x[..4].copy_from_slice(&[2688.0, 1000.0, 100.0, 300.0]);
    let got = run(spec("nvfp4"), &x);
    assert_eq!(&got[..4], &[2688.0, 896.0, 0.0, 224.0]);
}

/// The clipped-STE mask against the CPU op's gradient.
pub fn ste_masks(r: &dyn Runner) {
    let [mut x, mut y] = data_sets(8 * 64, 9);
    x[3] = 957.0;
    y[3] = 957.0;
    for (name, x) in [
        "mxfp8_e4m3",
        "int8",
        "fp8_e4m3",
        "nvfp4",
        "int4_g128",
        "mxfp6_e2m3",
        "fp8_e5m2",
        "fp8_e4m3_tile128x128",
    ]
    .iter()
    .flat_map(|n| [(*n, &x), (*n, &y)])
    {
        let op = fq(spec(name), None);
        let xv = Var::from_slice(x, (8, 64), &Device::Cpu).unwrap();
        let y = xv.as_tensor().apply_op1(op.clone()).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let want = bits(g.get(&xv).unwrap());
        let got = r.ste_mask(&op, x, &[8, 64]);
        let inputs: Vec<u32> = x.iter().map(|v| v.to_bits()).collect();
        assert_same(&got, &want, &inputs, &format!("{name} STE mask"));
    }
}

/// MX/NVFP4 blocks built to sit on the edges of the scale rules, one 32-element row each:
/// block maxima at and around every E8M0 rounding threshold (2^k, 1.5·2^k, 1.75·2^k and
/// their neighbouring f32 values) across the whole f32 range, huge blocks (f32::MAX, whose
/// scale exponent clamps at 127) and tiny ones (subnormal f32, clamped at −127), elements
/// that land on ties and on subnormals of the element format after scaling, single-value
/// blocks, negative maxima, −0, and blocks holding inf, −inf, NaN or −NaN.
pub fn adversarial_rows() -> Vec<f32> {
    let mut rows: Vec<Vec<f32>> = Vec::new();
    let mut rng = SplitMix(0xAD);
    let mut unit = move || (rng.next_u32() as f64 / 4_294_967_296.0) * 2.0 - 1.0;
    let mut exps: Vec<i32> = (-149..=127).step_by(6).collect();
    exps.extend([
        -149, -133, -127, -126, -125, -9, -6, -1, 0, 1, 6, 8, 119, 125, 126, 127,
    ]);
    for e in exps {
        for m in [
            1.0f64,
            1.5,
            1.75,
            1.875,
            1.999_999_9,
            1.25,
            1.0 + f64::EPSILON,
        ] {
            let amax = (m * 2f64.powi(e)) as f32;
            if !amax.is_finite() || amax == 0.0 {
                continue;
            }
            for nudge in [-1i32, 0, 1] {
                let a = f32::from_bits((amax.to_bits() as i64 + nudge as i64).max(1) as u32);
                if !a.is_finite() {
                    continue;
                }
                let mut row: Vec<f32> = (0..32).map(|_| (unit() * a as f64) as f32).collect();
                row[0] = if nudge == 0 { -a } else { a };
                // Ties and subnormals of the element formats after scaling: fractions of the
                // maximum on the element grids and half-way between them.
                for (k, f) in [
                    0.5f64,
                    0.25,
                    0.375,
                    0.75,
                    1.0 / 3.0,
                    2f64.powi(-9),
                    3.0 * 2f64.powi(-10),
                    2f64.powi(-10),
                ]
                .iter()
                .enumerate()
                {
                    row[1 + k] = (a as f64 * f) as f32;
                }
                row[10] = -0.0;
                row[11] = f32::from_bits(1);
                rows.push(row);
            }
        }
    }
    let mut special = |f: &dyn Fn(usize) -> f32| rows.push((0..32).map(f).collect());
    special(&|_| 0.0);
    special(&|_| -0.0);
    special(&|_| f32::MAX);
    special(&|i| if i % 2 == 0 { f32::MAX } else { -f32::MAX });
    special(&|_| f32::from_bits(1));
    special(&|i| f32::from_bits(1 + i as u32 * 1000));
    special(&|_| 957.0);
    special(&|i| if i == 5 { 957.0 } else { 1.0 });
    special(&|i| if i == 7 { f32::INFINITY } else { 1.0 });
    special(&|i| if i == 7 { f32::NEG_INFINITY } else { 1.0 });
    special(&|i| if i == 31 { f32::NAN } else { 1.0 });
    special(&|i| if i == 0 { -f32::NAN } else { 2.0 });
    special(&|i| if i == 16 { f32::NAN } else { 448.0 });
    special(&|i| -(i as f32) * 0.25);
    rows.concat()
}

/// The MX family under every E8M0 rule, NVFP4 under both block roundings, int4 groups:
/// device against the CPU engine on [`adversarial_rows`], dynamic and static (the rows sit
/// in one tensor, so per-tensor NVFP4 scales see the whole range).
pub fn adversarial_blocks(r: &dyn Runner) {
    let x = adversarial_rows();
    let rows = x.len() / 32;
    let mut specs = Vec::new();
    // Every MX preset (mxfp8_e4m3, mxfp8_e5m2, mxfp6_e2m3, mxfp6_e3m2, mxfp4, mxint8).
    let mx = lowbit_quant::PRESETS.iter().filter(|p| p.starts_with("mx"));
    assert_eq!(mx.clone().count(), 6, "the MX presets");
    for &base in mx {
        for rounding in [
            E8m0Rounding::Floor,
            E8m0Rounding::Ceil,
            E8m0Rounding::Even,
            E8m0Rounding::RCeil,
        ] {
            specs.push(
                spec(base)
                    .to_builder()
                    .scale(ScaleKind::E8M0 { rounding })
                    .build()
                    .unwrap(),
            );
        }
    }
    for block_rounding in [E4m3Rounding::Nearest, E4m3Rounding::Up] {
        specs.push(
            spec("nvfp4")
                .to_builder()
                .scale(ScaleKind::Nvfp4 { block_rounding })
                .build()
                .unwrap(),
        );
    }
    specs.push(spec("int4_g128"));
    let mut failures = Vec::new();
    for s in specs {
        for shape in [[rows, 32], [rows / 2, 64]] {
            let n = shape[0] * shape[1];
            failures.extend(check(r, s, &shape, &x[..n], DType::F32, 0));
            let frozen = s.to_builder().mode(ScaleMode::Static).build().unwrap();
            failures.extend(check(r, frozen, &shape, &x[..n], DType::F32, 0));
        }
        // Without the special rows, so that NVFP4's tensor scale is finite.
        let finite: Vec<f32> = x[..(rows - 14) * 32].to_vec();
        failures.extend(check(r, s, &[rows - 14, 32], &finite, DType::F32, 0));
    }
    assert!(rows > 400, "{rows} rows");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
