//! Integer fake-quant against PyTorch (torch 2.5.1): scales and zero points from
//! `MinMaxObserver` / `PerChannelMinMaxObserver`, outputs from `fake_quantize_per_tensor_affine`
//! / `fake_quantize_per_channel_affine`. Golden file `tests/golden/torch_fake_quant.txt` from
//! `scripts/golden/gen_torch_fake_quant_golden.py` (normal, shifted, ReLU'd Laplace, row
//! steps, and values one ulp beside the integer rounding's ties), symmetric and affine, per
//! tensor and per channel. Scales, zero points and outputs are compared bit for bit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use lowbit_formats::Format;
use lowbit_quant::QuantSpec;

const GOLDEN: &str = include_str!("golden/torch_fake_quant.txt");

mod golden_io;
use golden_io::{assert_no_mismatches, hex32, take, value_mismatches};

/// The lowbit spec of each of the script's specs.
fn spec(name: &str) -> QuantSpec {
    let int = |bits, signed, narrow| Format::int(bits, signed, narrow).unwrap();
    let b = match name {
        "int8_tensor" => QuantSpec::builder(int(8, true, true)),
        "int8_channel" => QuantSpec::builder(int(8, true, true)).per_channel(0),
        "int4_channel" => QuantSpec::builder(int(4, true, true)).per_channel(0),
        "uint8_tensor" => QuantSpec::builder(int(8, false, false)).asymmetric(true),
        "uint8_channel" => QuantSpec::builder(int(8, false, false))
            .asymmetric(true)
            .per_channel(0),
        "int8_affine" => QuantSpec::builder(int(8, true, false)).asymmetric(true),
        other => panic!("spec {other}"),
    };
    b.build().unwrap()
}

#[test]
fn integer_fake_quant_equals_pytorch_bit_for_bit() {
    let mut inputs: HashMap<String, (usize, usize, Vec<f32>)> = HashMap::new();
    let mut lines = GOLDEN.lines().filter(|l| !l.starts_with('#'));
    let mut mismatches = Vec::new();
    let mut cases = 0;
    while let Some(head) = lines.next() {
        let f: Vec<&str> = head.split_whitespace().collect();
        match f[0] {
            "input" => {
                let (rows, cols): (usize, usize) = (f[2].parse().unwrap(), f[3].parse().unwrap());
                let x: Vec<f32> = take(&mut lines, "x ", rows)
                    .iter()
                    .flat_map(|l| hex32(l))
                    .map(f32::from_bits)
                    .collect();
                inputs.insert(f[1].to_string(), (rows, cols, x));
            }
            "case" => {
                cases += 1;
                let (rows, cols, x) = &inputs[f[2]];
                let what = format!("{} on {}", f[1], f[2]);
                let scales = hex32(take(&mut lines, "s ", 1)[0]);
                let zeros: Vec<f32> = take(&mut lines, "z ", 1)[0]
                    .split_whitespace()
                    .map(|z| z.parse::<i32>().unwrap() as f32)
                    .collect();
                let want: Vec<u32> = take(&mut lines, "d ", *rows)
                    .iter()
                    .flat_map(|l| hex32(l))
                    .collect();
                let spec = spec(f[1]);
                let shape = [*rows, *cols];
                let sc = spec.compute_scales(x, &shape).unwrap();
                let got: Vec<u32> = sc.values.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, scales, "{what}: scales");
                let zp = sc
                    .zero_points
                    .clone()
                    .unwrap_or_else(|| vec![0.0; zeros.len()]);
                assert_eq!(zp, zeros, "{what}: zero points");
                let mut fq = vec![0f32; x.len()];
                spec.fake_quantize(x, &shape, &mut fq).unwrap();
                mismatches.extend(value_mismatches(&what, x, &fq, &want, false));
            }
            other => panic!("unexpected line kind {other}"),
        }
    }
    assert_eq!(cases, 5 * 6, "5 inputs × 6 specs");
    assert_no_mismatches(&mismatches);
}
