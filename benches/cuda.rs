//! GPU fake-quant on 256M f32 (1 GiB) beside a device-to-device copy of the same bytes (the
//! limit): per-tensor FP8 (dynamic: a reduction pass then the element pass; and with a frozen
//! scale: one pass), per-channel INT8, MX blocks of 32 (MXFP8 E4M3, MXFP4), NVFP4, INT4 groups
//! of 128, and the bare E4M3 cast. Every timed iteration ends with a device synchronisation.
//! Needs the `cuda` feature and a GPU (docs/cuda.md):
//!
//! ```text
//! cargo bench --features cuda --bench cuda -- --warm-up-time 1 --measurement-time 3
//! ```

// A bench is programmer code: a failing setup should stop it loudly.
#![allow(clippy::expect_used)]
// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::sync::Arc;

use candle_core::{Device, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lowbit::formats::{Conversion, Format};
use lowbit::nn::{ElementQuant, FakeQuant, Ste};
use lowbit::quant::{QuantSpec, ScaleMode};

const ROWS: usize = 16384;
const COLS: usize = 16384;

fn fq(spec: QuantSpec, scales: Option<Arc<lowbit::quant::Scales>>) -> FakeQuant {
    FakeQuant {
        spec,
        scales,
        ste: Ste::Clipped,
        grad_spec: None,
    }
}

fn gpu(c: &mut Criterion) {
    let dev = Device::new_cuda(0).expect("CUDA device 0");
    let x = Tensor::randn(0f32, 1.0, (ROWS, COLS), &dev).expect("randn");
    let sync = || dev.synchronize().expect("synchronize");
    let mut g = c.benchmark_group("gpu_fake_quant_256M");
    g.throughput(Throughput::Bytes((ROWS * COLS * 4) as u64));
    g.sample_size(10);
    g.bench_function("copy_d2d", |b| {
        b.iter(|| {
            let y = x.copy().expect("copy");
            sync();
            y
        })
    });
    let cast = ElementQuant {
        format: Format::E4M3FN,
        conversion: Conversion::SATURATE,
    };
    g.bench_function("cast_e4m3fn", |b| {
        b.iter(|| {
            let y = x.apply_op1_no_bwd(&cast).expect("cast");
            sync();
            y
        })
    });
    for name in [
        "fp8_e4m3",
        "int8",
        "mxfp8_e4m3",
        "mxfp4",
        "nvfp4",
        "int4_g128",
    ] {
        let spec: QuantSpec = name.parse().expect("preset");
        let op = fq(spec, None);
        g.bench_with_input(BenchmarkId::new("fake_quant", name), &op, |b, op| {
            b.iter(|| {
                let y = x.apply_op1_no_bwd(op).expect("fake-quant");
                sync();
                y
            })
        });
    }
    // A frozen per-tensor scale: one pass.
    let spec: QuantSpec = "fp8_e4m3".parse().expect("preset");
    let scales = lowbit::quant::Scales {
        shape: vec![1],
        values: vec![4.0 / 448.0],
        zero_points: None,
        tensor_scale: None,
    };
    let frozen = spec
        .to_builder()
        .mode(ScaleMode::Static)
        .build()
        .expect("static spec");
    let op = fq(frozen, Some(Arc::new(scales)));
    g.bench_function("fake_quant/fp8_e4m3_static", |b| {
        b.iter(|| {
            let y = x.apply_op1_no_bwd(&op).expect("fake-quant");
            sync();
            y
        })
    });
    g.finish();
}

criterion_group!(benches, gpu);
criterion_main!(benches);
