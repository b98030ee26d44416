//! The CUDA kernels against the references, on a GPU (feature `cuda`; docs/cuda.md says how
//! to build these tests here and run them on a GPU machine).
//!
//! - the bare element cast against the ml_dtypes golden tables (every run boundary of the f32
//!   line, every code, ties, specials) and against the scalar reference for every format,
//!   rounding rule (stochastic included) and overflow policy;
//! - every quantizer (presets and variants: all scale rules, granularities, axes, partial
//!   blocks, asymmetric, stochastic, static scales, f16/bf16, strided inputs) against the CPU
//!   engine, bit for bit, on data with zero blocks, inf/NaN, huge, tiny and subnormal values;
//! - hand-derived MX and NVFP4 blocks; the STE backward; a quantized layer.
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../lowbit-formats/tests/common/mod.rs"]
mod common;

use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::VarBuilder;
use common::{GOLDEN, SplitMix, boundary_inputs, class_inputs, golden_code};
use lowbit_formats::{Conversion, Format, Overflow, Rounding, stochastic_bits};
use lowbit_nn::{ElementQuant, FakeQuant, OpParams, QBuilder, QuantConfig, Registry, Ste};
use lowbit_quant::{
    E4m3Rounding, E8m0Rounding, Granularity, Po2Rounding, QuantSpec, ScaleKind, ScaleMode,
};

/// CUDA device 0. `LOWBIT_CUDA_DRY_RUN=1` substitutes the CPU (the comparisons become
/// trivial): it checks the tests' own setup on a machine without a GPU.
fn gpu() -> Device {
    if std::env::var_os("LOWBIT_CUDA_DRY_RUN").is_some() {
        return Device::Cpu;
    }
    Device::new_cuda(0).expect("these tests need CUDA device 0")
}

/// The golden tables of lowbit-formats (`LOWBIT_GOLDEN_DIR` overrides the path, for test
/// binaries run away from the source tree).
fn golden(stem: &str, ext: &str) -> Vec<(u32, u32)> {
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

fn bits(t: &Tensor) -> Vec<u32> {
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

fn cast(dev: &Device, x: &[f32], format: Format, conversion: Conversion) -> Vec<u32> {
    let t = Tensor::from_slice(x, x.len(), dev).unwrap();
    bits(
        &t.apply_op1_no_bwd(&ElementQuant { format, conversion })
            .unwrap(),
    )
}

/// `None` when `got == want`, else a description of the first difference.
fn diff(got: &[u32], want: &[u32], inputs: &[u32], what: &str) -> Option<String> {
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
            "{what}: {} of {} elements differ; first at {i}: input {:#010x} → gpu {:#010x}, reference {:#010x}",
            bad.len(),
            got.len(),
            inputs.get(i).copied().unwrap_or(0),
            got[i],
            want[i]
        )
    })
}

fn assert_same(got: &[u32], want: &[u32], inputs: &[u32], what: &str) {
    if let Some(d) = diff(got, want, inputs, what) {
        panic!("{d}");
    }
}

#[test]
fn element_cast_matches_ml_dtypes_golden_tables() {
    let dev = gpu();
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
        let got = cast(&dev, &xs, f, Conversion::REFERENCE);
        assert_same(&got, &want, &inputs, &format!("{stem} vs ml_dtypes"));
        // Every code's value casts to itself.
        let vals: Vec<f32> = table.iter().map(|&b| f32::from_bits(b)).collect();
        let got = cast(&dev, &vals, f, Conversion::REFERENCE);
        let want: Vec<u32> = table.clone();
        let nan_eq: Vec<u32> = got
            .iter()
            .zip(&want)
            .map(|(&g, &w)| {
                if f32::from_bits(w).is_nan() && f32::from_bits(g).is_nan() {
                    w
                } else {
                    g
                }
            })
            .collect();
        assert_same(&nan_eq, &want, &table, &format!("{stem} codes"));
    }
}

fn all_formats() -> Vec<Format> {
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

fn conversions() -> Vec<Conversion> {
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

#[test]
fn element_cast_matches_the_scalar_reference_for_every_format_and_rule() {
    let dev = gpu();
    let mut rng = SplitMix(11);
    for f in all_formats() {
        let mut xs = class_inputs(&f);
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
            let got = cast(&dev, &xs, f, conv);
            assert_same(&got, &want, &inputs, &format!("{f} {conv:?}"));
        }
    }
}

/// Test data of `n` elements: Gaussian-like values whose magnitude changes every 64 elements
/// over 2^-140 .. 2^120, with planted zero blocks, ±inf, NaN, f32::MAX, subnormals and the
/// 957-in-an-MX-block outlier.
fn data(n: usize, seed: u64) -> Vec<f32> {
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

fn spec(name: &str) -> QuantSpec {
    name.parse().unwrap()
}

fn variants() -> Vec<QuantSpec> {
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

fn fq(spec: QuantSpec, scales: Option<Arc<lowbit_quant::Scales>>) -> FakeQuant {
    FakeQuant {
        spec,
        scales,
        ste: Ste::Clipped,
        grad_spec: None,
    }
}

/// The GPU op and the CPU op on the same tensor give the same bits (`Some(difference)` if not).
fn check(
    spec: QuantSpec,
    shape: &[usize],
    x: &[f32],
    dev: &Device,
    dtype: DType,
) -> Option<String> {
    let cpu = Tensor::from_slice(x, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let gpu_t = cpu.to_device(dev).unwrap();
    let inputs: Vec<u32> = x.iter().map(|v| v.to_bits()).collect();
    let frozen = (spec.mode() == ScaleMode::Static).then(|| {
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
    });
    let op = fq(spec, frozen);
    let want = bits(&cpu.apply_op1_no_bwd(&op).unwrap());
    let got = bits(&gpu_t.apply_op1_no_bwd(&op).unwrap());
    diff(&got, &want, &inputs, &format!("{spec} {shape:?} {dtype:?}"))
}

#[test]
fn every_quantizer_matches_the_cpu_engine() {
    let dev = gpu();
    let shapes: [&[usize]; 6] = [
        &[64, 256],
        &[4, 8, 12, 32],
        &[3, 100],
        &[4096],
        &[512, 1024],
        &[7, 33],
    ];
    let mut count = 0;
    let mut failures = Vec::new();
    for s in variants() {
        for (k, shape) in shapes.iter().enumerate() {
            let n: usize = shape.iter().product();
            let x = data(n, 7 + k as u64);
            if Plan::fits(&s, shape) {
                failures.extend(check(s, shape, &x, &dev, DType::F32));
                let frozen = s.to_builder().mode(ScaleMode::Static).build().unwrap();
                failures.extend(check(frozen, shape, &x, &dev, DType::F32));
                count += 2;
            }
        }
    }
    for name in ["mxfp8_e4m3", "nvfp4", "int8", "fp8_e4m3", "mxfp4"] {
        for dtype in [DType::F16, DType::BF16] {
            failures.extend(check(
                spec(name),
                &[64, 256],
                &data(64 * 256, 3),
                &dev,
                dtype,
            ));
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

/// Which shapes a spec can run on (its axis must exist).
struct Plan;
impl Plan {
    fn fits(s: &QuantSpec, shape: &[usize]) -> bool {
        let axis = match s.granularity() {
            Granularity::PerTensor => return true,
            Granularity::PerChannel { axis }
            | Granularity::PerBlock { axis, .. }
            | Granularity::WholeAxis { axis } => axis,
        };
        let rank = shape.len() as isize;
        (-rank..rank).contains(&axis)
    }
}

#[test]
fn strided_and_offset_inputs_match_the_cpu() {
    let dev = gpu();
    let x = data(64 * 96, 5);
    let cpu = Tensor::from_slice(&x, (64, 96), &Device::Cpu).unwrap();
    let g = cpu.to_device(&dev).unwrap();
    for name in ["mxfp8_e4m3", "int8", "nvfp4", "fp8_e4m3"] {
        let op = fq(spec(name), None);
        let t_cpu = cpu.t().unwrap();
        let t_gpu = g.t().unwrap();
        assert_eq!(
            bits(&t_gpu.apply_op1_no_bwd(&op).unwrap()),
            bits(&t_cpu.apply_op1_no_bwd(&op).unwrap()),
            "{name} transposed"
        );
        let n_cpu = cpu.narrow(0, 3, 40).unwrap();
        let n_gpu = g.narrow(0, 3, 40).unwrap();
        assert_eq!(
            bits(&n_gpu.apply_op1_no_bwd(&op).unwrap()),
            bits(&n_cpu.apply_op1_no_bwd(&op).unwrap()),
            "{name} narrowed"
        );
    }
}

#[test]
fn hand_derived_mx_and_nvfp4_blocks_on_the_gpu() {
    let dev = gpu();
    let run = |s: QuantSpec, x: &[f32]| -> Vec<f32> {
        let t = Tensor::from_slice(x, x.len(), &dev).unwrap();
        t.apply_op1_no_bwd(&fq(s, None))
            .unwrap()
            .to_device(&Device::Cpu)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    // OCP MX v1.0 §6.3: amax 957 → shared exponent floor(log2 957) − 8 = 1, X = 2; 957/2 =
    // 478.5 saturates to 448 → 896. CEIL and RCEIL: X = 4, 957/4 = 239.25 → 240 → 960.
    let mut block = vec![1.0f32; 32];
    block[5] = 957.0;
    let mx = spec("mxfp8_e4m3");
    assert_eq!(run(mx, &block)[5], 896.0);
    for r in [E8m0Rounding::Ceil, E8m0Rounding::RCeil] {
        let s = mx
            .to_builder()
            .scale(ScaleKind::E8M0 { rounding: r })
            .build()
            .unwrap();
        assert_eq!(run(s, &block)[5], 960.0, "{r:?}");
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

#[test]
fn ste_backward_on_the_gpu_matches_the_cpu() {
    let dev = gpu();
    let mut x = data(8 * 64, 9);
    x[3] = 957.0;
    let w: Vec<f32> = (0..x.len()).map(|i| 0.5 + (i % 13) as f32 / 8.0).collect();
    for name in ["mxfp8_e4m3", "int8", "fp8_e4m3", "nvfp4"] {
        let mut grads = Vec::new();
        for d in [Device::Cpu, dev.clone()] {
            let xv = Var::from_slice(&x, (8, 64), &d).unwrap();
            let wt = Tensor::from_slice(&w, (8, 64), &d).unwrap();
            let y = xv.as_tensor().apply_op1(fq(spec(name), None)).unwrap();
            let loss = (y * &wt).unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap();
            grads.push(bits(g.get(&xv).unwrap()));
        }
        assert_eq!(grads[0], grads[1], "{name}");
    }
}

#[test]
fn a_quantized_linear_layer_runs_on_the_gpu() {
    let dev = gpu();
    let mut r = SplitMix(4);
    let mut t = |shape: &[usize], s: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| (r.next_u32() as f32 / 4_294_967_296.0 - 0.5) * s)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    };
    let (w, b, x) = (t(&[32, 64], 0.5), t(&[32], 0.1), t(&[5, 64], 2.0));
    let mut weights = std::collections::HashMap::new();
    weights.insert("l.weight".to_string(), w.to_device(&dev).unwrap());
    weights.insert("l.bias".to_string(), b.to_device(&dev).unwrap());
    let vb = VarBuilder::from_tensors(weights, DType::F32, &dev);
    let config = QuantConfig::from_yaml(
        "defaults: { weight: int8, bias: fp8_e4m3, input: mxfp8_e4m3, output: fp8_e5m2 }",
        "test.yaml",
    )
    .unwrap();
    let builder = QBuilder::new(vb, &config, Registry::default()).unwrap();
    let op = builder
        .op(
            "linear",
            "l",
            OpParams::Linear {
                in_dim: 64,
                out_dim: 32,
                bias: true,
            },
        )
        .unwrap();
    let _table = builder.finish().unwrap();
    let got = op.forward1(&x.to_device(&dev).unwrap()).unwrap();
    // The reference: the same fake-quants on the CPU, the same matmul on the GPU.
    let cpu_fq = |s: &str, t: &Tensor| t.apply_op1_no_bwd(&fq(spec(s), None)).unwrap();
    let lin = candle_nn::Linear::new(
        cpu_fq("int8", &w).to_device(&dev).unwrap(),
        Some(cpu_fq("fp8_e4m3", &b).to_device(&dev).unwrap()),
    );
    let mid = lin
        .forward(&cpu_fq("mxfp8_e4m3", &x).to_device(&dev).unwrap())
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap();
    let want = cpu_fq("fp8_e5m2", &mid);
    assert_eq!(bits(&got), bits(&want));
}
