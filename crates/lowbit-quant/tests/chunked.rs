//! The chunked fused kernels (block amax → scales → one fused SIMD call per chunk) against a
//! per-element reference built from the public scales and the format's scalar codec, with
//! partial blocks, NaN/inf blocks, zero blocks and stochastic rounding across thread counts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lowbit_formats::{Overflow, Rounding};
use lowbit_quant::QuantSpec;

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut z = seed;
    (0..n)
        .map(|_| {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^= x >> 31;
            let u = (x >> 40) as f32 / (1u64 << 24) as f32;
            let e = ((x >> 8) % 24) as i32 - 12;
            (u * 2.0 - 1.0) * 2f32.powi(e)
        })
        .collect()
}

/// Group index (scale layout) of element `i` of a `[rows, cols]` tensor.
fn group(spec: &QuantSpec, i: usize, cols: usize) -> usize {
    let (r, c) = (i / cols, i % cols);
    match spec.granularity() {
        lowbit_quant::Granularity::PerTensor => 0,
        lowbit_quant::Granularity::PerChannel { .. } => r,
        lowbit_quant::Granularity::PerBlock { size, .. } => r * cols.div_ceil(size) + c / size,
        lowbit_quant::Granularity::WholeAxis { .. } => r,
        lowbit_quant::Granularity::PerTile { rows, cols: tc } => {
            r / rows * cols.div_ceil(tc) + c / tc
        }
    }
}

fn check(spec: &QuantSpec, rows: usize, cols: usize, x: &[f32]) {
    let shape = [rows, cols];
    let mut y = vec![0f32; x.len()];
    let scales = spec
        .fake_quantize_returning_scales(x, &shape, &mut y)
        .unwrap();
    let f = spec.format();
    for (i, (&xi, &yi)) in x.iter().zip(&y).enumerate() {
        let eff = scales.effective(spec, group(spec, i, cols)).unwrap();
        if eff.is_nan() {
            assert!(
                yi.is_nan(),
                "{spec}: element {i} of a NaN-scaled block is {yi}"
            );
            continue;
        }
        if !eff.is_normal() || !(1.0 / eff).is_finite() {
            continue; // the prescaled path; covered by the MX hand cases
        }
        let want = f.quantize_with(xi * (1.0 / eff), spec.conversion(), 0) * eff;
        assert_eq!(
            yi.to_bits(),
            want.to_bits(),
            "{spec}: element {i}: x = {xi:e}, scale {eff:e}"
        );
    }
}

fn tile_specs() -> Vec<QuantSpec> {
    let mx = |name: &str, rows, cols| {
        let s: QuantSpec = name.parse().unwrap();
        s.to_builder().per_tile(rows, cols).build().unwrap()
    };
    vec![
        "fp8_e4m3_tile128x128".parse().unwrap(),
        mx("mxfp4", 32, 32),
        mx("mxfp8_e4m3", 8, 4),
        mx("nvfp4", 16, 16),
        mx("int8", 3, 50),
    ]
}

#[test]
fn chunked_kernels_equal_the_per_element_reference() {
    let tiles = tile_specs();
    for spec in [
        "mxfp8_e4m3",
        "mxfp8_e5m2",
        "mxfp6_e2m3",
        "mxfp4",
        "mxint8",
        "nvfp4",
        "int4_g128",
        "int8",
        "fp8_e4m3_chunk128_po2",
        "fp8_e4m3",
    ]
    .map(|name| name.parse::<QuantSpec>().unwrap())
    .iter()
    .chain(&tiles)
    {
        for (rows, cols) in [
            (3usize, 100usize),
            (64, 128),
            (5, 7),
            (257, 96),
            (1, 40_000),
        ] {
            let mut x = data(rows * cols, (rows * 31 + cols) as u64);
            if x.len() > 300 {
                x[5] = f32::NAN;
                x[70] = f32::INFINITY;
                for v in &mut x[128..160] {
                    *v = 0.0;
                }
                for v in &mut x[200..232] {
                    *v *= 1e-30;
                }
            }
            check(spec, rows, cols, &x);
        }
    }
}

#[test]
fn stochastic_rounding_is_thread_count_independent() {
    let spec = "mxfp4"
        .parse::<QuantSpec>()
        .unwrap()
        .to_builder()
        .rounding(Rounding::Stochastic { seed: 42 })
        .overflow(Overflow::Saturate)
        .build()
        .unwrap();
    let x = data(512 * 256, 9);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut y = vec![0f32; x.len()];
        pool.install(|| spec.fake_quantize(&x, &[512, 256], &mut y).unwrap());
        y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}

#[test]
fn large_tensors_stream_their_output_bit_exactly() {
    // ≥ 4 Mi elements: the block kernels write with non-temporal stores.
    let tiles = tile_specs();
    for spec in ["mxfp4", "nvfp4"]
        .map(|name| name.parse::<QuantSpec>().unwrap())
        .iter()
        .chain(&tiles[..2])
    {
        // 2056 = 64·32 + 8: a partial block per row; 2047 rows: a partial tile per column.
        let (rows, cols) = (2047usize, 2056usize);
        let x = data(rows * cols, 77);
        check(spec, rows, cols, &x);
    }
}
