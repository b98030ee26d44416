//! GPTQ: equal to round-to-nearest when the inputs are uncorrelated (diagonal Hessian), every
//! element on its group's grid, lower output error than round-to-nearest on correlated inputs,
//! and errors for what it cannot do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lowbit_formats::Format;
use lowbit_quant::{GptqOptions, Hessian, QuantSpec, check_compliance, gptq};

mod golden_io;
use golden_io::hex32;

/// SplitMix64 values in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn specs() -> Vec<(&'static str, QuantSpec)> {
    let p = |s: &str| s.parse::<QuantSpec>().unwrap();
    vec![
        (
            "int4 per channel",
            p("int4").to_builder().per_channel(0).build().unwrap(),
        ),
        (
            "int4 blocks of 32",
            p("int4").to_builder().per_block(-1, 32).build().unwrap(),
        ),
        ("int4_g128", p("int4_g128")),
        ("mxfp4", p("mxfp4")),
        ("nvfp4", p("nvfp4")),
        ("fp8_e4m3 per tensor", p("fp8_e4m3")),
        (
            "uint4 asymmetric per channel",
            QuantSpec::builder(Format::int(4, false, false).unwrap())
                .asymmetric(true)
                .per_channel(0)
                .build()
                .unwrap(),
        ),
    ]
}

/// Correlated inputs: `x = z · M` with a fixed mixing matrix, some columns much larger.
fn inputs(rng: &mut Rng, n: usize, cols: usize) -> Vec<f32> {
    let m: Vec<f32> = rng.vec(cols * cols);
    let mut x = vec![0f32; n * cols];
    for s in 0..n {
        let z = rng.vec(cols);
        for j in 0..cols {
            let mut v = 0f32;
            for k in 0..cols {
                v += z[k] * m[k * cols + j];
            }
            x[s * cols + j] = v * if j % 17 == 3 { 8.0 } else { 1.0 };
        }
    }
    x
}

fn output_error(x: &[f32], w: &[f32], q: &[f32], rows: usize, cols: usize) -> f64 {
    let n = x.len() / cols;
    let mut e = 0f64;
    for s in 0..n {
        let xs = &x[s * cols..(s + 1) * cols];
        for r in 0..rows {
            let (wr, qr) = (&w[r * cols..(r + 1) * cols], &q[r * cols..(r + 1) * cols]);
            let d: f64 = xs
                .iter()
                .zip(wr.iter().zip(qr))
                .map(|(&a, (&b, &c))| f64::from(a) * (f64::from(b) - f64::from(c)))
                .sum();
            e += d * d;
        }
    }
    e
}

#[test]
fn a_diagonal_hessian_gives_round_to_nearest_bit_for_bit() {
    let (rows, cols) = (12, 256);
    let mut rng = Rng(1);
    let w: Vec<f32> = rng.vec(rows * cols).iter().map(|v| v * 0.3).collect();
    let mut h = Hessian::new(cols);
    // Uncorrelated inputs of different sizes: one-hot rows.
    let mut x = vec![0f32; cols * cols];
    for i in 0..cols {
        x[i * cols + i] = 1.0 + (i % 5) as f32;
    }
    h.add(&x).unwrap();
    for (name, spec) in specs() {
        let g = gptq(&spec, &w, rows, cols, &h, GptqOptions::default()).unwrap();
        let mut rtn = vec![0f32; w.len()];
        spec.fake_quantize(&w, &[rows, cols], &mut rtn).unwrap();
        let got: Vec<u32> = g.values.iter().map(|v| v.to_bits()).collect();
        let want: Vec<u32> = rtn.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want, "{name}");
        assert_eq!(
            g.scales,
            spec.compute_scales(&w, &[rows, cols]).unwrap(),
            "{name}: scales"
        );
    }
}

#[test]
fn gptq_lowers_the_output_error_and_stays_on_the_grid() {
    let (rows, cols) = (16, 128);
    let mut rng = Rng(2);
    let w: Vec<f32> = rng.vec(rows * cols).iter().map(|v| v * 0.2).collect();
    let x = inputs(&mut rng, 512, cols);
    let mut h = Hessian::new(cols);
    h.add(&x[..256 * cols]).unwrap();
    h.add(&x[256 * cols..]).unwrap();
    assert_eq!(h.samples(), 512);
    for (name, spec) in specs() {
        let g = gptq(&spec, &w, rows, cols, &h, GptqOptions::default()).unwrap();
        let mut rtn = vec![0f32; w.len()];
        spec.fake_quantize(&w, &[rows, cols], &mut rtn).unwrap();
        let (eg, er) = (
            output_error(&x, &w, &g.values, rows, cols),
            output_error(&x, &w, &rtn, rows, cols),
        );
        assert!(eg < 0.8 * er, "{name}: gptq {eg} rtn {er}");
        // Every value lies on the grid of the scales GPTQ reports.
        let c = check_compliance(&spec, &g.values, &[rows, cols], &g.scales).unwrap();
        assert_eq!(c.off_grid, 0, "{name}: {c:?}");
        assert_eq!(c.bad_scales, 0, "{name}: {c:?}");
    }
}

#[test]
fn dead_inputs_get_zero_weights_and_bad_calls_are_errors() {
    let (rows, cols) = (4, 32);
    let mut rng = Rng(3);
    let w = rng.vec(rows * cols);
    let mut x = inputs(&mut rng, 64, cols);
    for s in 0..64 {
        x[s * cols + 5] = 0.0; // input 5 never fires
    }
    let mut h = Hessian::new(cols);
    h.add(&x).unwrap();
    let spec: QuantSpec = "int8".parse().unwrap();
    let g = gptq(&spec, &w, rows, cols, &h, GptqOptions::default()).unwrap();
    for r in 0..rows {
        assert_eq!(g.values[r * cols + 5], 0.0);
    }
    // Wrong sizes, unsupported groups, NaN weights, a singular Hessian without damping.
    assert!(gptq(&spec, &w[1..], rows, cols, &h, GptqOptions::default()).is_err());
    assert!(h.clone().add(&[1.0; 31]).is_err());
    let by_input = spec.to_builder().per_channel(1).build().unwrap();
    let e = gptq(&by_input, &w, rows, cols, &h, GptqOptions::default()).unwrap_err();
    assert!(e.to_string().contains("output channel"), "{e}");
    let mut bad = w.clone();
    bad[3] = f32::NAN;
    assert!(gptq(&spec, &bad, rows, cols, &h, GptqOptions::default()).is_err());
    let mut rank1 = Hessian::new(cols);
    rank1.add(&vec![1.0; cols]).unwrap();
    let e = gptq(
        &spec,
        &w,
        rows,
        cols,
        &rank1,
        GptqOptions {
            damp: 0.0,
            ..GptqOptions::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("damp"), "{e}");
    assert!(gptq(&spec, &w, rows, cols, &rank1, GptqOptions::default()).is_ok());
}

/// The reference algorithm (IST-DASLab `fasterquant`, ported to float64 torch by
/// `scripts/golden/gen_gptq_golden.py`) with lowbit's int4 quantizer, per channel (also in
/// act order) and in groups (also static, and static in act order), lazy batches of 128 and
/// 32: the same weights up to the last bits of the linear
/// algebra (the two sum in different orders, so a flip on a rounding boundary is possible in
/// principle; on this data every value is equal, the lazy-batch case of groups wider than the
/// batch included).
#[test]
fn gptq_equals_the_reference_algorithm() {
    let text = include_str!("golden/gptq_reference.txt");
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    let hex = |l: &str, tag: &str| -> Vec<f32> {
        hex32(l.strip_prefix(tag).unwrap())
            .into_iter()
            .map(f32::from_bits)
            .collect()
    };
    let shape: Vec<usize> = lines
        .next()
        .unwrap()
        .strip_prefix("shape ")
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let (rows, cols) = (shape[0], shape[1]);
    let w = hex(lines.next().unwrap(), "w ");
    let x = hex(lines.next().unwrap(), "x ");
    let mut h = Hessian::new(cols);
    h.add(&x).unwrap();
    let int4: QuantSpec = "int4".parse().unwrap();
    let mut cases = 0;
    while let Some(head) = lines.next() {
        let f: Vec<&str> = head.split_whitespace().collect();
        let (group, block): (i64, usize) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        let (act_order, static_groups) = (f[4] == "1", f[5] == "1");
        let want = hex(lines.next().unwrap(), "q ");
        let spec = if group < 0 {
            int4.to_builder().per_channel(0).build().unwrap()
        } else {
            int4.to_builder()
                .per_block(-1, group as usize)
                .build()
                .unwrap()
        };
        let opts = GptqOptions {
            damp: 0.01,
            block,
            act_order,
            static_groups,
        };
        let g = gptq(&spec, &w, rows, cols, &h, opts).unwrap();
        if static_groups {
            // The scales are blocks of the weight in its own order, each from the weight
            // with dead inputs zeroed: every value lies on its block's grid.
            let values = &g.scales.values;
            assert_eq!(g.scales.shape, [rows, cols / group as usize], "{}", f[1]);
            for (i, &q) in want.iter().enumerate() {
                let s = values[(i / cols) * (cols / group as usize) + (i % cols) / group as usize];
                let k = (q / s).round();
                assert!(
                    k * s == q && k.abs() <= 7.0,
                    "{}: {q} off the grid of {s}",
                    f[1]
                );
            }
            // Without static groups the batches' updates reach the scales (and act order
            // needs static groups with blocks).
            let dynamic = GptqOptions {
                static_groups: false,
                ..opts
            };
            match gptq(&spec, &w, rows, cols, &h, dynamic) {
                Ok(d) if block < cols => assert_ne!(d.values, want, "{}", f[1]),
                Ok(_) => {}
                Err(e) => assert!(act_order && e.to_string().contains("static_groups"), "{e}"),
            }
        }
        let same = g
            .values
            .iter()
            .zip(&want)
            // Values, not bits: the reference's rint keeps −0, lowbit's integers have one zero.
            .filter(|(a, b)| a == b)
            .count();
        let frac = same as f64 / want.len() as f64;
        let (eg, er) = (
            output_error(&x, &w, &g.values, rows, cols),
            output_error(&x, &w, &want, rows, cols),
        );
        assert_eq!(frac, 1.0, "{}: {same} of {} equal", f[1], want.len());
        assert!((eg - er).abs() < 0.01 * er, "{}: {eg} against {er}", f[1]);
        cases += 1;
    }
    assert_eq!(cases, 7);
}

/// `Hessian::scale_inputs(d)` is the Hessian of the inputs multiplied by `d`: with powers of two
/// (exact products) it equals feeding the scaled inputs, value for value; bad factors are
/// errors.
#[test]
fn scaled_hessian_is_the_hessian_of_scaled_inputs() {
    let cols = 8;
    let mut rng = Rng(11);
    let x = inputs(&mut rng, 50, cols);
    let d: Vec<f64> = (0..cols).map(|j| 2f64.powi(j as i32 - 3)).collect();
    let mut scaled = Hessian::new(cols);
    scaled.add(&x).unwrap();
    scaled.scale_inputs(&d).unwrap();
    let xd: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| v * d[i % cols] as f32)
        .collect();
    let mut fed = Hessian::new(cols);
    fed.add(&xd).unwrap();
    assert_eq!(scaled.matrix(), fed.matrix());
    let mut h = Hessian::new(cols);
    assert!(h.scale_inputs(&d[1..]).is_err());
    let mut bad = d.clone();
    bad[2] = f64::INFINITY;
    let e = h.scale_inputs(&bad).unwrap_err().to_string();
    assert!(e.contains("factor 2"), "{e}");
}
