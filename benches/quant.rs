//! lowbit-quant throughput on 16M f32 beside a memcpy of the same bytes: per-tensor FP8
//! (dynamic, and static with frozen scales), per-channel INT8, MX blocks of 32 (MXFP8 E4M3,
//! MXFP4), NVFP4, 2-D tiles (DeepSeek-V3's 128 × 128 FP8, NVFP4 in 16 × 16); percentile
//! calibration of 16M values beside a full sort.
//!
//! `memcpy` is `copy_from_slice` on one thread (the reference of the ratios in
//! docs/quantization.md); `memcpy_2t` is the same copy split over rayon's threads in 64K
//! chunks, as the quantizers are, to show what the machine's memory gives two cores.
//!
//! ```text
//! cargo bench --bench quant -- --warm-up-time 1 --measurement-time 3
//! ```

// A bench is programmer code: a failing setup should stop it loudly.
#![allow(clippy::expect_used)]
// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lowbit::quant::{Calibrator, Method, QuantSpec};
use rayon::prelude::*;

const N: usize = 1 << 24;

fn data() -> Vec<f32> {
    let mut s = 0x1234_5678_9abc_def0u64;
    let mut v: Vec<f32> = (0..N)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0
        })
        .collect();
    // A few special values.
    v[17] = 0.0;
    v[1000] = -0.0;
    v[5000] = 1.0e-40;
    v
}

fn fake_quant(c: &mut Criterion) {
    let x = data();
    let mut y = vec![0.0f32; N];
    let mut g = c.benchmark_group("fake_quant_16M");
    g.throughput(Throughput::Bytes((N * 4) as u64));
    g.sample_size(10);
    g.bench_function("memcpy", |b| b.iter(|| y.copy_from_slice(&x)));
    g.bench_function("memcpy_2t", |b| {
        b.iter(|| {
            y.par_chunks_mut(1 << 16)
                .zip(x.par_chunks(1 << 16))
                .for_each(|(d, s)| d.copy_from_slice(s))
        })
    });
    let shape = [4096usize, 4096];
    let nvfp4_16x16 = "nvfp4"
        .parse::<QuantSpec>()
        .expect("preset")
        .to_builder()
        .per_tile(16, 16)
        .build()
        .expect("spec");
    let specs = [
        "fp8_e4m3",
        "int8",
        "mxfp8_e4m3",
        "mxfp4",
        "nvfp4",
        "fp8_e4m3_tile128x128",
    ]
    .map(|name| (name.to_string(), name.parse::<QuantSpec>().expect("preset")))
    .into_iter()
    .chain([("nvfp4_tile16x16".to_string(), nvfp4_16x16)]);
    for (name, spec) in specs {
        g.bench_with_input(BenchmarkId::new("fake_quantize", name), &spec, |b, spec| {
            b.iter(|| {
                spec.fake_quantize(&x, &shape, &mut y)
                    .expect("fake_quantize")
            })
        });
    }
    // Static per tensor: the scale frozen beforehand, so one pass over the data (the dynamic
    // spec needs a full read for its amax first).
    let spec: QuantSpec = "fp8_e4m3".parse().expect("preset");
    let frozen = spec.compute_scales(&x, &shape).expect("scales");
    g.bench_function(BenchmarkId::new("fake_quantize", "fp8_e4m3_static"), |b| {
        b.iter(|| {
            spec.fake_quantize_with_scales(&x, &shape, &frozen, &mut y)
                .expect("fake_quantize_with_scales")
        })
    });
    g.finish();
}

fn percentile(c: &mut Criterion) {
    let x = data();
    let spec: QuantSpec = "fp8_e4m3".parse().expect("preset");
    let mut g = c.benchmark_group("percentile_16M");
    g.sample_size(10);
    g.bench_function("streaming_histogram", |b| {
        b.iter(|| {
            let mut cal = Calibrator::new(spec, Method::percentile(99.99));
            cal.observe(&x, &[N]).expect("observe");
            cal.freeze().expect("freeze")
        })
    });
    g.bench_function("full_sort", |b| {
        b.iter(|| {
            let mut a: Vec<f32> = x.iter().map(|v| v.abs()).collect();
            a.sort_unstable_by(f32::total_cmp);
            a[(a.len() as f64 * 0.9999) as usize]
        })
    });
    g.finish();
}

criterion_group!(benches, fake_quant, percentile);
criterion_main!(benches);
