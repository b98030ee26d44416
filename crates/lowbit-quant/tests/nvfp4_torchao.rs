//! NVFP4 against torchao's reference quantizer (`nvfp4_quantize`, torchao 0.12.0): the golden
//! file `tests/golden/nvfp4_torchao.txt` comes from `scripts/golden/gen_nvfp4_golden.py`
//! (seeded normal, Laplace, Student-t, a 2^±40 range, row steps, zero/constant/subnormal
//! blocks, and elements on and one ulp beside every E2M1 rounding tie), two-level and
//! one-level. Tensor scale, block scales, element codes and dequantized values are compared
//! bit for bit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lowbit_formats::Format;
use lowbit_quant::{E4m3Rounding, QuantSpec, ScaleKind};

mod golden_io;
use golden_io::{assert_no_mismatches, hex_bytes, hex32, packed_codes, take, value_mismatches};

const GOLDEN: &str = include_str!("golden/nvfp4_torchao.txt");

struct Case {
    name: String,
    levels: u32,
    rows: usize,
    cols: usize,
    tensor_scale: Option<u32>,
    x: Vec<f32>,
    scale_bytes: Vec<u8>,
    codes: Vec<u8>,
    dequantized: Vec<u32>,
}

fn parse() -> Vec<Case> {
    let mut out = Vec::new();
    let mut lines = GOLDEN.lines().filter(|l| !l.starts_with('#'));
    while let Some(head) = lines.next() {
        let f: Vec<&str> = head.split_whitespace().collect();
        assert_eq!(f[0], "case", "{head}");
        let (rows, cols): (usize, usize) = (f[3].parse().unwrap(), f[4].parse().unwrap());
        let x: Vec<f32> = take(&mut lines, "x ", rows)
            .iter()
            .flat_map(|l| hex32(l))
            .map(f32::from_bits)
            .collect();
        let scale_bytes: Vec<u8> = take(&mut lines, "s ", rows)
            .iter()
            .flat_map(|l| hex_bytes(l))
            .collect();
        let codes: Vec<u8> = take(&mut lines, "c ", rows)
            .iter()
            .flat_map(|l| packed_codes(l, 1))
            .collect();
        let dequantized: Vec<u32> = take(&mut lines, "d ", rows)
            .iter()
            .flat_map(|l| hex32(l))
            .collect();
        assert_eq!(x.len(), rows * cols);
        assert_eq!(codes.len(), rows * cols);
        assert_eq!(scale_bytes.len(), rows * cols / 16);
        out.push(Case {
            name: f[1].to_string(),
            levels: f[2].parse().unwrap(),
            rows,
            cols,
            tensor_scale: (f[5] != "-").then(|| u32::from_str_radix(f[5], 16).unwrap()),
            x,
            scale_bytes,
            codes,
            dequantized,
        });
    }
    out
}

fn spec(levels: u32) -> QuantSpec {
    match levels {
        2 => "nvfp4".parse().unwrap(),
        _ => QuantSpec::builder(Format::E2M1)
            .per_block(-1, 16)
            .scale(ScaleKind::E4M3 {
                rounding: E4m3Rounding::Nearest,
            })
            .build()
            .unwrap(),
    }
}

#[test]
fn nvfp4_equals_torchao_bit_for_bit() {
    let cases = parse();
    assert_eq!(cases.len(), 14, "7 inputs × two levels");
    let mut mismatches = Vec::new();
    for c in &cases {
        let spec = spec(c.levels);
        let shape = [c.rows, c.cols];
        let what = format!("{} ({} level)", c.name, c.levels);
        // Scales.
        let sc = spec.compute_scales(&c.x, &shape).unwrap();
        assert_eq!(
            sc.tensor_scale.map(f32::to_bits),
            c.tensor_scale,
            "{what}: tensor scale"
        );
        let want_scales: Vec<f32> = c
            .scale_bytes
            .iter()
            .map(|&b| Format::E4M3FN.decode(b.into()))
            .collect();
        assert_eq!(sc.values, want_scales, "{what}: block scales");
        // Codes.
        let q = spec.quantize(&c.x, &shape).unwrap();
        let codes = q.codes().unwrap();
        for (i, (&got, &want)) in codes.iter().zip(&c.codes).enumerate() {
            if got != want {
                mismatches.push(format!(
                    "{what}: element {i} ({:e}, bits {:08x}): code {got:x}, torchao {want:x}",
                    c.x[i],
                    c.x[i].to_bits()
                ));
            }
        }
        // Dequantized values: torchao's e2m1 * (tensor_scale * block_scale).
        let mut fq = vec![0f32; c.x.len()];
        spec.fake_quantize(&c.x, &shape, &mut fq).unwrap();
        mismatches.extend(value_mismatches(&what, &c.x, &fq, &c.dequantized, true));
    }
    assert_no_mismatches(&mismatches);
}

/// The division convention on the engine's other paths: one big per-tensor group (threads
/// inside it), blocks longer than the stack buffer, codes, and stochastic rounding, against
/// `x / s` written out here.
#[test]
fn division_holds_on_big_groups_codes_and_stochastic_rounding() {
    let n = (1 << 17) + 4099;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i as f32) * 0.618_034).sin() * (1.0 + (i % 97) as f32))
        .collect();
    let e4m3 = ScaleKind::E4M3 {
        rounding: E4m3Rounding::Nearest,
    };
    let b = || QuantSpec::builder(Format::E2M1).scale(e4m3);
    let specs = [
        b().build().unwrap(),                     // per tensor: one big group
        b().per_block(-1, 9000).build().unwrap(), // blocks longer than the 8192 buffer
        b().per_block(-1, 16)
            .rounding(lowbit_formats::Rounding::Stochastic { seed: 3 })
            .build()
            .unwrap(),
    ];
    for spec in specs {
        let shape = [n];
        let sc = spec.compute_scales(&x, &shape).unwrap();
        let per = x.len().div_ceil(sc.values.len());
        let mut fq = vec![0f32; n];
        spec.fake_quantize(&x, &shape, &mut fq).unwrap();
        let codes = spec.quantize(&x, &shape).unwrap().codes().unwrap();
        let conv = spec.conversion();
        for (i, &v) in x.iter().enumerate() {
            let s = sc.values[i / per];
            let rand = match conv.rounding {
                lowbit_formats::Rounding::Stochastic { seed } => {
                    lowbit_formats::stochastic_bits(seed, i as u64)
                }
                _ => 0,
            };
            let want = Format::E2M1.quantize_with(v / s, conv, rand) * s;
            assert_eq!(fq[i].to_bits(), want.to_bits(), "{spec}: element {i}");
            assert_eq!(
                u32::from(codes[i]),
                Format::E2M1.encode_with(v / s, conv, rand),
                "{spec}: code {i}"
            );
        }
    }
}
