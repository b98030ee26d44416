//! The CUDA kernels against the references, on a GPU (feature `cuda`; docs/cuda.md says how
//! to build these tests here and run them on a GPU machine). The test bodies are shared with
//! the host emulator of the same kernels (`cuda_emulator.rs`, `kernel_cases/`):
//!
//! - the bare element cast against the ml_dtypes golden tables (every run boundary of the f32
//!   line, every code, ties, specials) and against the scalar reference for every format,
//!   rounding rule (stochastic included) and overflow policy;
//! - every quantizer (presets and variants: all scale rules, granularities, axes, partial
//!   blocks, asymmetric, stochastic, static scales, f16/bf16, offset and strided inputs)
//!   against the CPU engine, bit for bit, on data with zero blocks, inf/NaN, huge, tiny and
//!   subnormal values;
//! - hand-derived MX and NVFP4 blocks; the STE mask and backward; a quantized layer.
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kernel_cases;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::VarBuilder;
use kernel_cases::{Runner, SplitMix, bits, data, fq, spec};
use lowbit_formats::{Conversion, Format};
use lowbit_nn::{ElementQuant, FakeQuant, OpParams, QBuilder, QuantConfig, Registry};

/// CUDA device 0. `LOWBIT_CUDA_DRY_RUN=1` substitutes the CPU (the comparisons become
/// trivial): it checks the tests' own setup on a machine without a GPU.
fn gpu() -> Device {
    if std::env::var_os("LOWBIT_CUDA_DRY_RUN").is_some() {
        return Device::Cpu;
    }
    Device::new_cuda(0).expect("these tests need CUDA device 0")
}

/// The GPU through candle's tensors and ops.
struct Gpu(Device);

impl Runner for Gpu {
    fn cast(&self, x: &[f32], format: Format, conversion: Conversion) -> Vec<u32> {
        let t = Tensor::from_slice(x, x.len(), &self.0).unwrap();
        bits(
            &t.apply_op1_no_bwd(&ElementQuant { format, conversion })
                .unwrap(),
        )
    }

    fn fake_quant(
        &self,
        op: &FakeQuant,
        x: &[f32],
        shape: &[usize],
        dtype: DType,
        start: usize,
    ) -> Vec<u32> {
        // A tensor `start` elements into a larger buffer: a narrowed contiguous view.
        let mut buf = vec![0.0f32; start];
        buf.extend_from_slice(x);
        // The dtype conversion on the CPU (the half crate's rules), as the reference does.
        let t = Tensor::from_vec(buf, start + x.len(), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
            .to_device(&self.0)
            .unwrap()
            .narrow(0, start, x.len())
            .unwrap()
            .reshape(shape)
            .unwrap();
        bits(&t.apply_op1_no_bwd(op).unwrap())
    }

    fn ste_mask(&self, op: &FakeQuant, x: &[f32], shape: &[usize]) -> Vec<u32> {
        let xv = Var::from_slice(x, shape, &self.0).unwrap();
        let y = xv.as_tensor().apply_op1(op.clone()).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        bits(g.get(&xv).unwrap())
    }
}

#[test]
fn element_cast_matches_ml_dtypes_golden_tables() {
    kernel_cases::golden_casts(&Gpu(gpu()));
}

#[test]
fn element_cast_matches_the_scalar_reference_for_every_format_and_rule() {
    kernel_cases::scalar_reference_casts(&Gpu(gpu()), None);
}

#[test]
fn every_quantizer_matches_the_cpu_engine() {
    let shapes: [&[usize]; 6] = [
        &[64, 256],
        &[4, 8, 12, 32],
        &[3, 100],
        &[4096],
        &[512, 1024],
        &[7, 33],
    ];
    kernel_cases::every_quantizer(&Gpu(gpu()), &shapes);
}

#[test]
fn offset_inputs_match_the_cpu() {
    kernel_cases::offset_inputs(&Gpu(gpu()));
}

#[test]
fn hand_derived_mx_and_nvfp4_blocks_on_the_gpu() {
    kernel_cases::hand_derived_blocks(&Gpu(gpu()));
}

#[test]
fn adversarial_mx_and_nvfp4_blocks_match_the_cpu() {
    kernel_cases::adversarial_blocks(&Gpu(gpu()));
}

#[test]
fn ste_mask_on_the_gpu_matches_the_cpu() {
    kernel_cases::ste_masks(&Gpu(gpu()));
}

#[test]
fn frozen_scales_on_special_values_match_the_cpu() {
    kernel_cases::frozen_scales_on_specials(&Gpu(gpu()));
}

#[test]
fn rounding_conventions_on_the_gpu_match_the_cpu() {
    kernel_cases::rounding_conventions(&Gpu(gpu()));
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

#[test]
fn lsq_forward_and_backward_on_the_gpu_match_the_cpu() {
    let dev = gpu();
    let x = kernel_cases::finite_data(16 * 64, 12);
    let w: Vec<f32> = (0..x.len()).map(|i| 0.25 + (i % 7) as f32 / 8.0).collect();
    for (name, s) in [("int8", vec![0.02f32; 16]), ("fp8_e4m3", vec![0.01f32])] {
        let spec = if s.len() == 1 {
            spec(name)
                .to_builder()
                .granularity(lowbit_quant::Granularity::PerTensor)
                .build()
                .unwrap()
        } else {
            spec(name)
                .to_builder()
                .granularity(lowbit_quant::Granularity::PerChannel { axis: 0 })
                .build()
                .unwrap()
        };
        let op = lowbit_nn::LsqFakeQuant { spec };
        let mut out = Vec::new();
        for d in [Device::Cpu, dev.clone()] {
            let xv = Var::from_slice(&x, (16, 64), &d).unwrap();
            let sv = Var::from_slice(&s, s.len(), &d).unwrap();
            let wt = Tensor::from_slice(&w, (16, 64), &d).unwrap();
            let y = xv.as_tensor().apply_op2(sv.as_tensor(), op).unwrap();
            let loss = (&y * &wt).unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap();
            out.push((
                bits(&y),
                bits(g.get(&xv).unwrap()),
                bits(g.get(&sv).unwrap()),
            ));
        }
        assert_eq!(out[0], out[1], "{name}");
    }
}
