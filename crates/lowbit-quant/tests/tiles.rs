//! 2-D tile scales (`Granularity::PerTile`): against references built here with plain loops,
//! hand-derived scales, calibration, compliance and storage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lowbit_formats::{Format, Rounding};
use lowbit_quant::*;

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
    fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 + 0.5) / (1u32 << 24) as f32
    }
    /// Heavy-tailed, with magnitudes spread over many binades.
    fn value(&mut self) -> f32 {
        let m = self.unit() * 2.0 - 1.0;
        m * (2.0f32).powi((self.next() % 12) as i32 - 6)
    }
}

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed);
    (0..n).map(|_| r.value()).collect()
}

fn fq(spec: &QuantSpec, x: &[f32], shape: &[usize]) -> Vec<f32> {
    let mut q = vec![0.0; x.len()];
    spec.fake_quantize(x, shape, &mut q).unwrap();
    q
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `(matrices, M, N)` of a shape, as the tile granularity sees it.
fn matrices(shape: &[usize]) -> (usize, usize, usize) {
    match shape.len() {
        0 => (1, 1, 1),
        1 => (1, 1, shape[0]),
        r => (shape[..r - 2].iter().product(), shape[r - 2], shape[r - 1]),
    }
}

/// The definition, written out with plain loops: every (cut) `rows × cols` tile becomes one
/// row of a `[tiles, rows · cols]` matrix, tile-major, the missing elements of edge tiles
/// zero; that matrix is quantized with blocks of `rows · cols` along its last axis; the
/// results are read back. Returns the values and the scales (one per tile).
fn reference(spec: &QuantSpec, x: &[f32], shape: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let Granularity::PerTile { rows, cols } = spec.granularity() else {
        panic!("not a tile spec")
    };
    let (b, m, n) = matrices(shape);
    let (r, c) = (rows.min(m.max(1)), cols.min(n.max(1)));
    let (gr, gc) = (m.div_ceil(r), n.div_ceil(c));
    let tiles = b * gr * gc;
    let mut work = vec![0.0f32; tiles * r * c];
    let pos = |bi: usize, i: usize, j: usize| {
        ((bi * gr + i / r) * gc + j / c) * r * c + (i % r) * c + j % c
    };
    for bi in 0..b {
        for i in 0..m {
            for j in 0..n {
                work[pos(bi, i, j)] = x[(bi * m + i) * n + j];
            }
        }
    }
    let blocks = spec.to_builder().per_block(-1, r * c).build().unwrap();
    let wshape = [tiles, r * c];
    let mut wq = vec![0.0f32; work.len()];
    let sc = blocks
        .fake_quantize_returning_scales(&work, &wshape, &mut wq)
        .unwrap();
    let mut out = vec![0.0f32; x.len()];
    for bi in 0..b {
        for i in 0..m {
            for j in 0..n {
                out[(bi * m + i) * n + j] = wq[pos(bi, i, j)];
            }
        }
    }
    (out, sc.values)
}

fn tile_specs() -> Vec<(String, QuantSpec)> {
    let e8m0 = ScaleKind::E8M0 {
        rounding: E8m0Rounding::Floor,
    };
    let sr = Rounding::Stochastic { seed: 0x5eed };
    let mut v = vec![(
        "fp8_e4m3_tile128x128 preset".to_string(),
        "fp8_e4m3_tile128x128".parse().unwrap(),
    )];
    for (rows, cols) in [(3, 4), (2, 8), (1, 5), (4, 1), (16, 16), (8, 3)] {
        let b = |f: Format| QuantSpec::builder(f).per_tile(rows, cols);
        let specs = [
            b(Format::E4M3FN).build().unwrap(),
            b(Format::INT8).build().unwrap(),
            b(Format::INT4)
                .asymmetric(true)
                .narrow_range(false)
                .build()
                .unwrap(),
            b(Format::E2M1).scale(e8m0).build().unwrap(),
            b(Format::E3M2)
                .scale(ScaleKind::E8M0 {
                    rounding: E8m0Rounding::RCeil,
                })
                .build()
                .unwrap(),
            b(Format::E2M1)
                .scale(ScaleKind::Nvfp4 {
                    block_rounding: E4m3Rounding::Nearest,
                })
                .build()
                .unwrap(),
            b(Format::E5M2)
                .scale(ScaleKind::PowerOfTwo {
                    rounding: Po2Rounding::Ceil,
                })
                .build()
                .unwrap(),
            b(Format::E4M3FN).rounding(sr).build().unwrap(),
            b(Format::INT4).rounding(sr).build().unwrap(),
        ];
        v.extend(specs.into_iter().map(|s| (format!("{s}"), s)));
    }
    v
}

const SHAPES: &[&[usize]] = &[
    &[7, 10],
    &[2, 7, 10],
    &[16, 16],
    &[5, 3, 4, 9],
    &[13],
    &[3, 2],
    &[1, 40],
    &[40, 1],
];

#[test]
fn tiles_equal_blocks_of_the_tile_major_matrix() {
    for (name, spec) in tile_specs() {
        for (k, &shape) in SHAPES.iter().enumerate() {
            let n: usize = shape.iter().product();
            let x = data(n, 17 + k as u64);
            let (want, want_scales) = reference(&spec, &x, shape);
            let mut got = vec![0.0f32; n];
            let sc = spec
                .fake_quantize_returning_scales(&x, shape, &mut got)
                .unwrap();
            let ctx = format!("{name} on {shape:?}");
            assert_eq!(bits(&got), bits(&want), "{ctx}");
            assert_eq!(bits(&sc.values), bits(&want_scales), "{ctx}: scales");
            let l = spec.layout(shape).unwrap();
            assert_eq!(sc.shape, l.scale_shape, "{ctx}");
            assert_eq!(l.n_groups, want_scales.len(), "{ctx}");
            // Static: the same scales frozen give the same values; codes decode to them.
            let mut again = vec![0.0f32; n];
            let frozen = spec.to_builder().mode(ScaleMode::Static).build().unwrap();
            frozen
                .fake_quantize_with_scales(&x, shape, &sc, &mut again)
                .unwrap();
            assert_eq!(bits(&again), bits(&want), "{ctx}: static");
            let t = spec.quantize(&x, shape).unwrap();
            assert_eq!(
                bits(&t.dequantize().unwrap()),
                bits(&want),
                "{ctx}: dequantize"
            );
            let rep = check_compliance(&spec, &got, shape, &sc).unwrap();
            assert!(rep.is_compliant(), "{ctx}: {rep:?}");
        }
    }
}

#[test]
fn every_tile_gets_the_scale_of_its_own_elements() {
    // Edge tiles included: the zeros that pad them in the work layout change nothing.
    for (name, spec) in tile_specs() {
        if matches!(spec.scale(), ScaleKind::Nvfp4 { .. })
            || spec.conversion().rounding != Rounding::NearestEven
        {
            continue; // a tensor-level scale / positions that differ per tile
        }
        let Granularity::PerTile { rows, cols } = spec.granularity() else {
            unreachable!()
        };
        let per_tensor = spec
            .to_builder()
            .granularity(Granularity::PerTensor)
            .build()
            .unwrap();
        let shape = [2usize, 7, 10];
        let x = data(140, 99);
        let got = fq(&spec, &x, &shape);
        let sc = spec.compute_scales(&x, &shape).unwrap();
        let (r, c) = (rows.min(7), cols.min(10));
        let (gr, gc) = (7usize.div_ceil(r), 10usize.div_ceil(c));
        for b in 0..2 {
            for tr in 0..gr {
                for tc in 0..gc {
                    let idx: Vec<usize> = (tr * r..(tr * r + r).min(7))
                        .flat_map(|i| {
                            (tc * c..(tc * c + c).min(10)).map(move |j| (b * 7 + i) * 10 + j)
                        })
                        .collect();
                    let xs: Vec<f32> = idx.iter().map(|&i| x[i]).collect();
                    let ps = per_tensor.compute_scales(&xs, &[xs.len()]).unwrap();
                    let g = (b * gr + tr) * gc + tc;
                    assert_eq!(
                        sc.values[g].to_bits(),
                        ps.values[0].to_bits(),
                        "{name} tile {g}"
                    );
                    let want = fq(&per_tensor, &xs, &[xs.len()]);
                    let got_t: Vec<f32> = idx.iter().map(|&i| got[i]).collect();
                    assert_eq!(bits(&got_t), bits(&want), "{name} tile {g}");
                }
            }
        }
    }
}

#[test]
fn hand_derived_int8_tiles() {
    // [[1, -2, 3], [4, 5, -6], [7, 8, 9]] in 2 × 2 tiles: {1, -2, 4, 5}, {3, -6}, {7, 8}, {9};
    // int8 narrow, f32 scale amax / 127, the amax element coded ±127.
    let spec = QuantSpec::builder(Format::INT8)
        .per_tile(2, 2)
        .build()
        .unwrap();
    let x = [1.0f32, -2.0, 3.0, 4.0, 5.0, -6.0, 7.0, 8.0, 9.0];
    let t = spec.quantize(&x, &[3, 3]).unwrap();
    assert_eq!(t.scales().shape, vec![2, 2]);
    assert_eq!(
        t.scales().values,
        vec![5.0 / 127.0, 6.0 / 127.0, 8.0 / 127.0, 9.0 / 127.0]
    );
    let codes: Vec<i8> = t.codes().unwrap().iter().map(|&c| c as i8).collect();
    // 1 / (5/127) = 25.4 → 25; -2 → -50.8 → -51; 4 → 101.6 → 102; 3 / (6/127) = 63.5 → 64
    // (ties to even: 63.5 → 64); 7 / (8/127) = 111.125 → 111.
    assert_eq!(codes, vec![25, -51, 64, 102, 127, -127, 111, 127, 127]);
    // A taller-than-the-matrix tile is cut to it: one tile per 2 columns of all 3 rows.
    let tall = QuantSpec::builder(Format::INT8)
        .per_tile(128, 2)
        .build()
        .unwrap();
    let l = tall.layout(&[3, 3]).unwrap();
    assert_eq!((l.kind, l.n_groups, l.block), (GroupKind::Tiles, 2, 6));
    let g = l.tiles.unwrap();
    assert_eq!((g.rows, g.cols, g.grid_rows, g.grid_cols), (3, 2, 1, 2));
    assert_eq!(l.scale_shape, vec![1, 2]);
    assert_eq!(
        tall.compute_scales(&x, &[3, 3]).unwrap().values,
        vec![8.0 / 127.0, 9.0 / 127.0]
    );
    // Leading axes are a batch of matrices: [2, 3, 3] has 2 × (2 × 2) tiles.
    assert_eq!(spec.layout(&[2, 3, 3]).unwrap().scale_shape, vec![2, 2, 2]);
    assert_eq!(spec.layout(&[5]).unwrap().scale_shape, vec![3]);
}

#[test]
fn deepseek_v3_weight_blocks() {
    // The preset: E4M3FN, 128 × 128 tiles, f32 scale amax / 448. An outlier in one tile of a
    // 256 × 384 weight changes that tile's scale only.
    let spec: QuantSpec = "fp8_e4m3_tile128x128".parse().unwrap();
    let mut x = data(256 * 384, 3);
    let before = spec.compute_scales(&x, &[256, 384]).unwrap();
    x[130 * 384 + 200] = 1000.0; // tile (1, 1)
    let after = spec.compute_scales(&x, &[256, 384]).unwrap();
    assert_eq!(after.shape, vec![2, 3]);
    for g in 0..6 {
        if g == 4 {
            assert_eq!(after.values[g], 1000.0 / 448.0);
        } else {
            assert_eq!(after.values[g], before.values[g], "tile {g}");
        }
    }
    let q = fq(&spec, &x, &[256, 384]);
    assert_eq!(q[130 * 384 + 200], 1000.0);
}

#[test]
fn calibration_sees_each_tiles_own_elements() {
    // Max and percentile calibration of a [2, 7, 10] tensor in 4 × 4 tiles: each tile's frozen
    // scale equals a per-tensor calibrator's on that tile's elements alone (the edge tiles'
    // padding is not counted by the histogram).
    let tiles = QuantSpec::builder(Format::E4M3FN)
        .per_tile(4, 4)
        .build()
        .unwrap();
    let per_tensor = QuantSpec::builder(Format::E4M3FN).build().unwrap();
    let batches: Vec<Vec<f32>> = (0..3).map(|k| data(140, 50 + k)).collect();
    for method in [Method::Max, Method::percentile(90.0), Method::mse()] {
        let mut cal = Calibrator::new(tiles, method);
        for b in &batches {
            cal.observe(b, &[2, 7, 10]).unwrap();
        }
        let frozen = cal.freeze().unwrap();
        assert_eq!(frozen.scales.shape, vec![2, 2, 3]);
        for g in 0..12 {
            let (b, tr, tc) = (g / 6, (g / 3) % 2, g % 3);
            let mut one = Calibrator::new(per_tensor, method);
            for x in &batches {
                let xs: Vec<f32> = (tr * 4..(tr * 4 + 4).min(7))
                    .flat_map(|i| {
                        (tc * 4..(tc * 4 + 4).min(10)).map(move |j| x[(b * 7 + i) * 10 + j])
                    })
                    .collect();
                one.observe(&xs, &[xs.len()]).unwrap();
            }
            let want = one.freeze().unwrap().scales.values[0];
            assert_eq!(frozen.scales.values[g], want, "{method:?} tile {g}");
        }
    }
}

#[test]
fn compliance_points_at_the_element_in_an_edge_tile() {
    let spec = QuantSpec::builder(Format::E2M1)
        .per_tile(4, 4)
        .scale(ScaleKind::E8M0 {
            rounding: E8m0Rounding::Floor,
        })
        .build()
        .unwrap();
    let shape = [2usize, 7, 10];
    let x = data(140, 8);
    let mut q = fq(&spec, &x, &shape);
    let sc = spec.compute_scales(&x, &shape).unwrap();
    let at = (7 + 6) * 10 + 9; // matrix 1, row 6, column 9: the bottom-right edge tile
    q[at] = sc.values[11] * 0.75; // 0.75 is not an E2M1 value
    let rep = check_compliance(&spec, &q, &shape, &sc).unwrap();
    assert_eq!((rep.off_grid, rep.off_grid_indices.clone()), (1, vec![at]));
}

#[test]
fn bad_tiles_are_rejected_and_specs_roundtrip() {
    let err = QuantSpec::builder(Format::INT8)
        .per_tile(0, 4)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("tile"), "{err}");
    let err = QuantSpec::builder(Format::INT8)
        .per_tile(4, 0)
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("0 x 4") || err.to_string().contains("4 x 0"),
        "{err}"
    );
    let spec = QuantSpec::builder(Format::E2M1)
        .per_tile(16, 16)
        .scale(ScaleKind::Nvfp4 {
            block_rounding: E4m3Rounding::Nearest,
        })
        .build()
        .unwrap();
    let json = serde_json::to_string(&spec).unwrap();
    assert!(
        json.contains(r#""granularity":{"kind":"per_tile","rows":16,"cols":16}"#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<QuantSpec>(&json).unwrap(), spec);
    assert!(spec.to_string().contains("tiles of 16 x 16"), "{spec}");
    // Scales of the wrong shape are refused.
    let sc = spec.compute_scales(&data(128, 1), &[4, 32]).unwrap();
    assert_eq!(sc.shape, vec![1, 2]);
    let mut out = vec![0.0; 128];
    let frozen = spec.to_builder().mode(ScaleMode::Static).build().unwrap();
    let err = frozen
        .fake_quantize_with_scales(&data(128, 1), &[32, 4], &sc, &mut out)
        .unwrap_err();
    assert!(err.to_string().contains("[2, 1]"), "{err}");
}

#[test]
fn empty_and_scalar_tensors() {
    let spec = QuantSpec::builder(Format::E4M3FN)
        .per_tile(4, 4)
        .build()
        .unwrap();
    for shape in [&[0usize, 5][..], &[3, 0], &[2, 0, 3], &[]] {
        let n: usize = shape.iter().product();
        let x = data(n, 1);
        let mut q = vec![0.0f32; n];
        let sc = spec
            .fake_quantize_returning_scales(&x, shape, &mut q)
            .unwrap();
        assert_eq!(
            sc.shape,
            spec.layout(shape).unwrap().scale_shape,
            "{shape:?}"
        );
        assert_eq!(
            sc.values.len(),
            spec.layout(shape).unwrap().n_groups,
            "{shape:?}"
        );
        let t = spec.quantize(&x, shape).unwrap();
        assert_eq!(bits(&t.dequantize().unwrap()), bits(&q), "{shape:?}");
    }
    // A scalar is one tile of one element: per tensor, in effect.
    let per_tensor = QuantSpec::builder(Format::E4M3FN).build().unwrap();
    assert_eq!(
        bits(&fq(&spec, &[3.3], &[])),
        bits(&fq(&per_tensor, &[3.3], &[1]))
    );
}
