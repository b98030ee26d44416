//! OCP MX against torchao's reference quantizer (`to_mx` / `to_dtype`, torchao 0.12.0): the
//! golden file `tests/golden/mx_torchao.txt` comes from `scripts/golden/gen_mx_golden.py`
//! (seeded normal, Laplace, Student-t, row steps over 2^±60, a 2^±60 element range, and zero,
//! constant, power-of-two-edge and element-tie blocks) for MXFP8 E4M3/E5M2 and MXFP6
//! E2M3/E3M2 under the FLOOR, CEIL, EVEN and RCEIL scale rules. E8M0 scales, element codes and
//! dequantized values are compared bit for bit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use lowbit_quant::{E8m0Rounding, QuantSpec, ScaleKind};

mod golden_io;
use golden_io::{assert_no_mismatches, hex_bytes, hex32, packed_codes, take, value_mismatches};

const GOLDEN: &str = include_str!("golden/mx_torchao.txt");

struct Case {
    format: String,
    rule: String,
    input: String,
    scale_bytes: Vec<u8>,
    codes: Vec<u8>,
    dequantized: Vec<u32>,
}

/// The inputs (name → (rows, cols, values)) and the cases.
#[allow(clippy::type_complexity)]
fn parse() -> (HashMap<String, (usize, usize, Vec<f32>)>, Vec<Case>) {
    let mut inputs = HashMap::new();
    let mut cases = Vec::new();
    let mut lines = GOLDEN.lines().filter(|l| !l.starts_with('#'));
    let mut rows_of = HashMap::new();
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
                assert_eq!(x.len(), rows * cols);
                rows_of.insert(f[1].to_string(), rows);
                inputs.insert(f[1].to_string(), (rows, cols, x));
            }
            "case" => {
                let rows = rows_of[f[3]];
                let scale_bytes = take(&mut lines, "s ", rows)
                    .iter()
                    .flat_map(|l| hex_bytes(l))
                    .collect();
                let codes = take(&mut lines, "c ", rows)
                    .iter()
                    .flat_map(|l| packed_codes(l, 2))
                    .collect();
                let dequantized = take(&mut lines, "d ", rows)
                    .iter()
                    .flat_map(|l| hex32(l))
                    .collect();
                cases.push(Case {
                    format: f[1].to_string(),
                    rule: f[2].to_string(),
                    input: f[3].to_string(),
                    scale_bytes,
                    codes,
                    dequantized,
                });
            }
            other => panic!("unexpected line kind {other}"),
        }
    }
    (inputs, cases)
}

fn spec(preset: &str, rule: &str) -> QuantSpec {
    let base: QuantSpec = preset.parse().unwrap();
    let rounding = match rule {
        "floor" => E8m0Rounding::Floor,
        "ceil" => E8m0Rounding::Ceil,
        "even" => E8m0Rounding::Even,
        "rceil" => E8m0Rounding::RCeil,
        other => panic!("rule {other}"),
    };
    base.to_builder()
        .scale(ScaleKind::E8M0 { rounding })
        .build()
        .unwrap()
}

#[test]
fn mx_equals_torchao_bit_for_bit() {
    let (inputs, cases) = parse();
    assert_eq!(cases.len(), 6 * 4 * 4, "6 inputs × 4 formats × 4 rules");
    let mut mismatches = Vec::new();
    for c in &cases {
        let (rows, cols, x) = &inputs[&c.input];
        let shape = [*rows, *cols];
        let spec = spec(&c.format, &c.rule);
        let what = format!("{} {} {}", c.format, c.rule, c.input);
        // Scales: 2^(byte − 127), NaN for 0xFF.
        let sc = spec.compute_scales(x, &shape).unwrap();
        let want: Vec<u32> = c
            .scale_bytes
            .iter()
            .map(|&b| match b {
                0xFF => f32::NAN.to_bits(),
                0 => 1 << 22, // 2^-127
                b => u32::from(b) << 23,
            })
            .collect();
        let got: Vec<u32> = sc.values.iter().map(|v| v.to_bits()).collect();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if g != w {
                mismatches.push(format!(
                    "{what}: block {i}: scale {:e}, torchao {:e}",
                    f32::from_bits(*g),
                    f32::from_bits(*w)
                ));
            }
        }
        let codes = spec.quantize(x, &shape).unwrap().codes().unwrap();
        for (i, (&g, &w)) in codes.iter().zip(&c.codes).enumerate() {
            if g != w {
                mismatches.push(format!(
                    "{what}: element {i} ({:e}): code {g:02x}, torchao {w:02x}",
                    x[i]
                ));
            }
        }
        let mut fq = vec![0f32; x.len()];
        spec.fake_quantize(x, &shape, &mut fq).unwrap();
        mismatches.extend(value_mismatches(&what, x, &fq, &c.dequantized, true));
    }
    assert_no_mismatches(&mismatches);
}
