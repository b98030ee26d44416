//! Every fast path (the lane algorithm, AVX2, AVX-512, threaded) equals the scalar reference
//! bit for bit, for every format family, rounding rule, overflow policy, with and without a
//! scale, on inputs covering every class (ties and their neighbours, subnormals, overflow edge,
//! ±0, ±inf, NaN payloads) and on random bit patterns (proptest).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{SplitMix, class_inputs};
use lowbit_formats::{Codec, Conversion, Format, Isa, Overflow, Rounding, stochastic_bits};
use proptest::prelude::*;

fn formats() -> Vec<Format> {
    let mut v: Vec<Format> = Format::named().collect();
    for name in [
        "e3m4",
        "e5m3_b11_fnuz",
        "e4m3_b11_fnuz",
        "e2m2",
        "e5m10",
        "e8m7",
        "e6m1_fn",
        "e1m2",
        "e1m0",
        "e3m3_b-2",
        "e4m0_fn",
        "e8m3_b140",
        "int8",
        "int8_full",
        "int4",
        "int2",
        "uint8",
        "uint4",
        "int16",
        "e8m1_b149_none",
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
        Rounding::Stochastic { seed: 7 },
    ] {
        for overflow in [Overflow::Reference, Overflow::Saturate] {
            v.push(Conversion::new(rounding, overflow));
        }
    }
    v
}

/// Reference results for `inputs`, element `i` numbered `first + i` for stochastic rounding.
fn reference(
    f: &Format,
    conv: Conversion,
    inputs: &[f32],
    scale: Option<f32>,
    first: u64,
) -> (Vec<u32>, Vec<u32>) {
    let seed = match conv.rounding {
        Rounding::Stochastic { seed } => Some(seed),
        _ => None,
    };
    let mut codes = Vec::with_capacity(inputs.len());
    let mut q = Vec::with_capacity(inputs.len());
    for (i, &x) in inputs.iter().enumerate() {
        let rand = seed.map_or(0, |s| stochastic_bits(s, first + i as u64));
        let (x, s) = match scale {
            Some(s) => (x * (1.0 / s), s),
            None => (x, 1.0),
        };
        let c = f.encode_with(x, conv, rand);
        codes.push(c);
        let d = f.decode(c);
        q.push(if scale.is_some() {
            (d * s).to_bits()
        } else {
            d.to_bits()
        });
    }
    (codes, q)
}

fn check_all_paths(f: &Format, conv: Conversion, inputs: &[f32]) {
    for scale in [None, Some(0.375f32), Some(3.0e-3)] {
        let (want_codes, want_q) = reference(f, conv, inputs, scale, 5);
        for isa in Isa::available() {
            for parallel in [false, true] {
                let codec = Codec::new(*f, conv)
                    .with_isa(isa)
                    .unwrap()
                    .with_parallel(parallel);
                let mut q = vec![0f32; inputs.len()];
                match scale {
                    Some(s) => codec.quantize_scaled_slice(inputs, &mut q, s, 5).unwrap(),
                    None if matches!(conv.rounding, Rounding::Stochastic { .. }) => {
                        // quantize_slice numbers elements from 0; compare with the scaled
                        // entry point at scale 1 instead so both number from 5.
                        codec.quantize_scaled_slice(inputs, &mut q, 1.0, 5).unwrap()
                    }
                    None => codec.quantize_slice(inputs, &mut q).unwrap(),
                }
                for i in 0..inputs.len() {
                    assert_eq!(
                        q[i].to_bits(),
                        want_q[i],
                        "{f} {conv:?} {isa} parallel={parallel} scale={scale:?}: quantize({:#010x})",
                        inputs[i].to_bits()
                    );
                }
                if f.bits() <= 8 {
                    let mut c = vec![0u8; inputs.len()];
                    match scale {
                        Some(s) => codec.encode_scaled_slice(inputs, &mut c, s, 5).unwrap(),
                        None => codec.encode_scaled_slice(inputs, &mut c, 1.0, 5).unwrap(),
                    }
                    for i in 0..inputs.len() {
                        assert_eq!(
                            c[i] as u32,
                            want_codes[i],
                            "{f} {conv:?} {isa} parallel={parallel} scale={scale:?}: encode({:#010x})",
                            inputs[i].to_bits()
                        );
                    }
                    let mut d = vec![0f32; inputs.len()];
                    codec.decode_slice(&c, &mut d).unwrap();
                    for i in 0..inputs.len() {
                        assert_eq!(
                            d[i].to_bits(),
                            f.decode(c[i] as u32).to_bits(),
                            "{f} {isa}: decode({:#04x})",
                            c[i]
                        );
                    }
                } else {
                    let mut c = vec![0u32; inputs.len()];
                    codec.encode_slice_u32(inputs, &mut c).unwrap();
                    if scale.is_none() && !matches!(conv.rounding, Rounding::Stochastic { .. }) {
                        for i in 0..inputs.len() {
                            assert_eq!(
                                c[i],
                                want_codes[i],
                                "{f} {conv:?}: encode_u32({:#010x})",
                                inputs[i].to_bits()
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn every_path_equals_reference_on_every_input_class() {
    for f in formats() {
        let inputs = class_inputs(&f);
        for conv in conversions() {
            check_all_paths(&f, conv, &inputs);
        }
    }
}

#[test]
fn threaded_large_slices_equal_reference() {
    // Large enough to be split across threads, with stochastic rounding numbered globally.
    let mut rng = SplitMix(42);
    let inputs: Vec<f32> = (0..(1 << 18) + 13)
        .map(|_| f32::from_bits(rng.next_u32()))
        .collect();
    for f in [Format::E4M3FN, Format::E2M1, Format::INT8] {
        for conv in [
            Conversion::REFERENCE,
            Conversion::new(Rounding::Stochastic { seed: 99 }, Overflow::Saturate),
        ] {
            let (_, want) = reference(&f, conv, &inputs, None, 0);
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut q = vec![0f32; inputs.len()];
                pool.install(|| Codec::new(f, conv).quantize_slice(&inputs, &mut q).unwrap());
                let got: Vec<u32> = q.iter().map(|x| x.to_bits()).collect();
                assert!(
                    got == want,
                    "{f} {conv:?} with {threads} threads differs from the reference"
                );
            }
        }
    }
}

#[test]
fn length_mismatch_is_an_error() {
    let codec = Codec::new(Format::E4M3FN, Conversion::REFERENCE);
    let mut out = [0f32; 3];
    let err = codec.quantize_slice(&[1.0, 2.0], &mut out).unwrap_err();
    assert_eq!(
        err.to_string(),
        "length mismatch in quantize_slice: dst has 3 elements, expected 2"
    );
    let wide: Format = "e5m10".parse().unwrap();
    let mut codes = [0u8; 2];
    let err = wide.encode_slice(&[1.0, 2.0], &mut codes).unwrap_err();
    assert!(err.to_string().contains("16-bit codes"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_bit_patterns_equal_reference(seed in any::<u64>(), fi in 0usize..30, ci in 0usize..8) {
        let fs = formats();
        let f = fs[fi % fs.len()];
        let conv = conversions()[ci];
        let mut rng = SplitMix(seed);
        let inputs: Vec<f32> = (0..257).map(|_| f32::from_bits(rng.next_u32())).collect();
        check_all_paths(&f, conv, &inputs);
    }
}

#[test]
fn block_kernels_equal_reference() {
    let mut rng = SplitMix(7);
    let n: usize = 1000 + 13; // a partial last block
    let mut src: Vec<f32> = (0..n)
        .map(|_| (rng.next_u32() as f32 / u32::MAX as f32 - 0.5) * 1e3)
        .collect();
    src[5] = f32::NAN;
    src[40] = f32::INFINITY;
    src[77] = -0.0;
    src[100] = 1e-40;
    for f in formats() {
        for block in [1usize, 16, 32, 100, 2048] {
            let nb = n.div_ceil(block);
            let scales: Vec<f32> = (0..nb).map(|k| 0.01 * (1.0 + k as f32 * 0.37)).collect();
            for conv in [
                Conversion::REFERENCE,
                Conversion::SATURATE,
                Conversion::new(Rounding::NearestAway, Overflow::Saturate),
                Conversion::new(Rounding::Stochastic { seed: 9 }, Overflow::Saturate),
            ] {
                // Stochastic rounding numbers the elements from `FIRST`.
                const FIRST: u64 = (1 << 33) + 3;
                let want: Vec<u32> = src
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| {
                        let s = scales[i / block];
                        let rand = stochastic_bits(9, FIRST + i as u64);
                        (f.quantize_with(x * (1.0 / s), conv, rand) * s).to_bits()
                    })
                    .collect();
                for isa in Isa::available() {
                    let codec = Codec::new(f, conv).with_isa(isa).unwrap();
                    let mut dst = vec![0f32; n];
                    codec
                        .quantize_blocks_scaled(&src, &mut dst, block, &scales, FIRST)
                        .unwrap();
                    let got: Vec<u32> = dst.iter().map(|x| x.to_bits()).collect();
                    assert!(got == want, "{f} {conv:?} {isa} block {block}");
                }
            }
        }
    }
    let codec = Codec::new(Format::E2M1, Conversion::SATURATE);
    let err = codec
        .quantize_blocks_scaled(&src, &mut vec![0f32; n], 32, &[1.0; 3], 0)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("scales has 3 elements, expected 32"),
        "{err}"
    );
}

#[test]
fn abs_max_blocks_on_every_isa() {
    let mut rng = SplitMix(9);
    let src: Vec<f32> = (0..4099)
        .map(|_| f32::from_bits(rng.next_u32() & 0xBFFF_FFFF))
        .collect();
    let mut special = src.clone();
    special[3] = f32::NEG_INFINITY;
    special[40] = f32::NAN;
    for data in [&src, &special] {
        for block in [1usize, 7, 16, 32, 4096, 5000] {
            let want: Vec<u32> = data
                .chunks(block)
                .map(|c| {
                    if c.iter().any(|x| x.is_nan()) {
                        c.iter()
                            .find(|x| x.is_nan())
                            .map(|x| x.to_bits() & 0x7FFF_FFFF)
                            .unwrap()
                    } else {
                        c.iter().map(|x| x.abs()).fold(0f32, f32::max).to_bits()
                    }
                })
                .collect();
            for isa in Isa::available() {
                let mut out = vec![0f32; data.len().div_ceil(block)];
                lowbit_formats::abs_max_blocks_on(isa, data, block, &mut out).unwrap();
                let got: Vec<u32> = out.iter().map(|x| x.to_bits()).collect();
                assert_eq!(got, want, "{isa} block {block}");
            }
        }
    }
}

#[test]
fn streaming_stores_on_large_misaligned_outputs_equal_reference() {
    // ≥ 4 Mi elements switches the kernels to non-temporal stores; offset the output so the
    // peeling to a 64-byte boundary runs too.
    let n = (1usize << 22) + 21;
    let mut rng = SplitMix(11);
    let src: Vec<f32> = (0..n)
        .map(|_| f32::from_bits(rng.next_u32() & 0xC7FF_FFFF))
        .collect();
    for f in [Format::E4M3FN, Format::INT8] {
        for isa in Isa::available() {
            for parallel in [false, true] {
                let codec = Codec::new(f, Conversion::SATURATE)
                    .with_isa(isa)
                    .unwrap()
                    .with_parallel(parallel);
                let mut buf = vec![0f32; n + 1];
                codec.quantize_slice(&src, &mut buf[1..]).unwrap();
                let bad = src.iter().zip(&buf[1..]).position(|(&x, &q)| {
                    q.to_bits() != f.quantize_with(x, Conversion::SATURATE, 0).to_bits()
                });
                assert_eq!(bad, None, "{f} {isa} parallel={parallel}");
                // Encoding streams too: byte codes into a destination at odd offsets.
                for off in [1, 37] {
                    let mut codes = vec![0u8; n + off];
                    codec.encode_slice(&src, &mut codes[off..]).unwrap();
                    let bad = src.iter().zip(&codes[off..]).position(|(&x, &c)| {
                        u32::from(c) != f.encode_with(x, Conversion::SATURATE, 0)
                    });
                    assert_eq!(
                        bad, None,
                        "{f} {isa} parallel={parallel} encode offset {off}"
                    );
                }
            }
        }
    }
}

/// `quantize_blocks_fused` against its definition: `abs_max_blocks`, the scales the callback
/// picks, then the scalar reference `q(x · (1/s)) · s` per element; every format, every
/// deterministic rounding, block sizes on both kernel paths (16–64 in registers, others
/// re-read), partial groups and a partial last block, plain and streaming stores into
/// destinations at every 4-byte offset within a line, every instruction set.
#[test]
fn fused_block_kernel_equals_reference() {
    let mut rng = SplitMix(21);
    let n: usize = 16 * 64 * 3 + 5 * 32 + 19; // whole groups, a partial group, a short block
    let mut src: Vec<f32> = (0..n)
        .map(|_| {
            let u = rng.next_u32();
            let e = (u >> 24) as i32 % 40 - 20;
            ((u & 0xFFFF) as f32 / 65536.0 - 0.5) * 2f32.powi(e)
        })
        .collect();
    // NaNs with the largest payloads round past bit 31 on the fast path's integer rounding.
    let nan_max = f32::from_bits(0x7FFF_FFFF);
    let neg_nan_max = f32::from_bits(0xFFFF_FFFF);
    for (i, v) in [
        f32::NAN,
        f32::INFINITY,
        -0.0,
        1e-40,
        -3.0e38,
        0.0,
        nan_max,
        neg_nan_max,
    ]
    .into_iter()
    .enumerate()
    {
        src[37 + 411 * i] = v;
    }
    src[1000..1040].fill(0.0); // an all-zero block
    // A scale rule with every kind of outcome: powers of two, plain f32 quotients, a NaN
    // scale for blocks holding NaN (but scale 1 for those whose largest NaN has the largest
    // payload, so that NaN elements also meet a finite scale), subnormal scales for tiny
    // blocks.
    let rule = |a: f32| -> f32 {
        if a.to_bits() == 0x7FFF_FFFF {
            1.0
        } else if a.is_nan() {
            f32::NAN
        } else if a == 0.0 {
            1.0
        } else if a.to_bits() & 1 == 0 {
            a / 448.0
        } else {
            f32::from_bits(a.to_bits() & 0x7F80_0000).max(1e-30)
        }
    };
    // `div`: quantize_blocks_fused_div, `q(x / s) · s`.
    for (f, div) in formats().into_iter().flat_map(|f| [(f, false), (f, true)]) {
        for conv in [
            Conversion::REFERENCE,
            Conversion::SATURATE,
            Conversion::new(Rounding::NearestAway, Overflow::Saturate),
            Conversion::new(Rounding::TowardZero, Overflow::Reference),
            Conversion::new(Rounding::Stochastic { seed: 5 }, Overflow::Saturate),
        ] {
            for block in [1usize, 7, 16, 32, 48, 64, 100, 4096] {
                let nb = n.div_ceil(block);
                let mut amax = vec![0f32; nb];
                lowbit_formats::abs_max_blocks(&src, block, &mut amax).unwrap();
                let scales: Vec<f32> = amax.iter().map(|&a| rule(a)).collect();
                let want: Vec<u32> = src
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| {
                        let s = scales[i / block];
                        let rand = stochastic_bits(5, i as u64);
                        let y = if div { x / s } else { x * (1.0 / s) };
                        (f.quantize_with(y, conv, rand) * s).to_bits()
                    })
                    .collect();
                for isa in Isa::available() {
                    for stream in [false, true] {
                        for offset in [0usize, 1, 3, 15] {
                            let codec = Codec::new(f, conv)
                                .with_isa(isa)
                                .unwrap()
                                .with_streaming(stream);
                            let mut buf = vec![0f32; n + 16];
                            let dst = &mut buf[offset..offset + n];
                            let mut seen = vec![f32::NAN; nb];
                            let mut next = 0usize;
                            let scales_of = |k0: usize, a: &[f32], s: &mut [f32]| {
                                assert_eq!(k0, next, "groups in order");
                                assert_eq!(a.len(), s.len());
                                next += a.len();
                                for (j, (&a, s)) in a.iter().zip(s).enumerate() {
                                    seen[k0 + j] = a;
                                    *s = rule(a);
                                }
                            };
                            if div {
                                codec
                                    .quantize_blocks_fused_div(&src, dst, block, 0, scales_of)
                                    .unwrap();
                            } else {
                                codec
                                    .quantize_blocks_fused(&src, dst, block, 0, scales_of)
                                    .unwrap();
                            }
                            let ctx = format!(
                                "{f} {conv:?} {isa} block {block} stream {stream} offset {offset} div {div}"
                            );
                            assert_eq!(next, nb, "{ctx}: every block once");
                            let seen: Vec<u32> = seen.iter().map(|x| x.to_bits()).collect();
                            let amax: Vec<u32> = amax.iter().map(|x| x.to_bits()).collect();
                            assert_eq!(seen, amax, "{ctx}: block maxima");
                            let got: Vec<u32> = dst.iter().map(|x| x.to_bits()).collect();
                            // NaN results (NaN inputs or NaN scales) compare as NaN: Rust does
                            // not fix which operand's NaN a product propagates.
                            let same = |g: u32, w: u32| {
                                g == w || (f32::from_bits(g).is_nan() && f32::from_bits(w).is_nan())
                            };
                            if let Some(i) = (0..n).find(|&i| !same(got[i], want[i])) {
                                panic!(
                                    "{ctx}: element {i} ({:#010x}): got {:#010x}, want {:#010x}",
                                    src[i].to_bits(),
                                    got[i],
                                    want[i]
                                );
                            }
                            // Nothing written outside the destination.
                            assert!(
                                buf[..offset]
                                    .iter()
                                    .chain(&buf[offset + n..])
                                    .all(|&x| x == 0.0)
                            );
                        }
                    }
                }
            }
        }
    }
    let codec = Codec::new(Format::E2M1, Conversion::SATURATE);
    let err = codec
        .quantize_blocks_fused(&src, &mut vec![0f32; n - 1], 32, 0, |_, _, _| {})
        .unwrap_err();
    assert!(err.to_string().contains("dst"), "{err}");
    assert!(
        codec
            .quantize_blocks_fused(&src, &mut vec![0f32; n], 0, 0, |_, _, _| {})
            .is_err()
    );
}

/// `quantize_blocks_fused_div` divides: on elements placed on the E2M1 rounding ties of
/// scales `1.0 … 1.875` (blocks of 48, each with its own scale; 24 blocks, so the kernel's
/// whole groups and its remainder both run) and one ulp beside them, every level gives
/// `q(x / s) · s`, which differs from `q(x · (1/s)) · s` on some of them.
#[test]
fn fused_division_is_a_division() {
    let block = 48;
    let mut src = Vec::new();
    for k in 0..24 {
        let s = 1.0 + 0.125 * (k % 8) as f32;
        let mut b = vec![6.0 * s]; // the block's maximum: its scale is exactly s
        for t in [0.25f32, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0] {
            let x = t * s;
            for v in [
                x,
                f32::from_bits(x.to_bits() - 1),
                f32::from_bits(x.to_bits() + 1),
            ] {
                b.push(v);
                b.push(-v);
            }
        }
        b.resize(block, 0.0);
        src.extend(b);
    }
    let n = src.len();
    let scale = |i: usize| src[i / block * block] / 6.0;
    let f = Format::E2M1;
    let conv = Conversion::SATURATE;
    let by_division: Vec<u32> = (0..n)
        .map(|i| (f.quantize_with(src[i] / scale(i), conv, 0) * scale(i)).to_bits())
        .collect();
    let by_reciprocal: Vec<u32> = (0..n)
        .map(|i| (f.quantize_with(src[i] * (1.0 / scale(i)), conv, 0) * scale(i)).to_bits())
        .collect();
    let differ = (0..n)
        .filter(|&i| by_division[i] != by_reciprocal[i])
        .count();
    assert!(differ > 0, "the planted ties tell the two apart");
    for isa in Isa::available() {
        let codec = Codec::new(f, conv).with_isa(isa).unwrap();
        let mut dst = vec![0f32; n];
        codec
            .quantize_blocks_fused_div(&src, &mut dst, block, 0, |_, a, sc| {
                for (a, sc) in a.iter().zip(sc) {
                    *sc = a / 6.0;
                }
            })
            .unwrap();
        let got: Vec<u32> = dst.iter().map(|x| x.to_bits()).collect();
        assert_eq!(got, by_division, "{isa}");
    }
}

/// Every `f32` bit pattern through `encode_slice` and `quantize_slice` on every instruction-set
/// level (single-threaded), against the scalar reference (`encode_with`, `quantize_with`), for
/// every byte-code format of [`formats`] under nearest-even with both overflow policies. Run
/// with `cargo test --release -p lowbit-formats --test kernels -- --ignored`: 24 formats × 2
/// policies, 1954 s on 2 cores (passed, 2026-11-30, scalar + AVX2 + AVX-512).
#[test]
#[ignore = "exhaustive: all 2^32 inputs per format, level and policy (tens of minutes)"]
fn exhaustive_every_level_equals_reference() {
    let byte_formats: Vec<Format> = formats().into_iter().filter(|f| f.bits() <= 8).collect();
    for overflow in [Overflow::Reference, Overflow::Saturate] {
        exhaustive(
            &byte_formats,
            Conversion::new(Rounding::NearestEven, overflow),
        );
    }
}

/// [`exhaustive_every_level_equals_reference`] under stochastic rounding: pattern `p` is
/// element `p` (its random word `stochastic_bits(seed, p)`), for the OCP formats, e3m0 and
/// integers, saturating: 9 formats, 689 s on 2 cores (passed, 2026-11-30, scalar lane + AVX2 +
/// AVX-512).
#[test]
#[ignore = "exhaustive: all 2^32 inputs per format and level (tens of minutes)"]
fn exhaustive_stochastic_every_level_equals_reference() {
    let names = [
        "e4m3fn", "e5m2", "e4m3fnuz", "e2m3", "e3m2", "e2m1", "e3m0", "int8", "uint4",
    ];
    let fs: Vec<Format> = names.iter().map(|n| n.parse().unwrap()).collect();
    exhaustive(
        &fs,
        Conversion::new(Rounding::Stochastic { seed: 11 }, Overflow::Saturate),
    );
}

/// All 2^32 patterns of each format through every level, numbered by their bit pattern.
fn exhaustive(formats: &[Format], conv: Conversion) {
    use rayon::prelude::*;
    const CHUNK: u64 = 1 << 20;
    let seed = match conv.rounding {
        Rounding::Stochastic { seed } => Some(seed),
        _ => None,
    };
    for f in formats {
        (0..(1u64 << 32) / CHUNK).into_par_iter().for_each(|c| {
            let first = c * CHUNK;
            let src: Vec<f32> = (0..CHUNK)
                .map(|i| f32::from_bits((first + i) as u32))
                .collect();
            let rand = |i: usize| seed.map_or(0, |s| stochastic_bits(s, first + i as u64));
            let codes: Vec<u8> = src
                .iter()
                .enumerate()
                .map(|(i, &x)| f.encode_with(x, conv, rand(i)) as u8)
                .collect();
            let values: Vec<u32> = src
                .iter()
                .enumerate()
                .map(|(i, &x)| f.quantize_with(x, conv, rand(i)).to_bits())
                .collect();
            let (mut got_c, mut got_q) = (vec![0u8; src.len()], vec![0f32; src.len()]);
            for isa in Isa::available() {
                let codec = Codec::new(*f, conv)
                    .with_isa(isa)
                    .unwrap()
                    .with_parallel(false);
                if seed.is_some() {
                    // Scale 1 multiplies by 1 (exact) and numbers the elements from `first`.
                    codec
                        .encode_scaled_slice(&src, &mut got_c, 1.0, first)
                        .unwrap();
                    codec
                        .quantize_scaled_slice(&src, &mut got_q, 1.0, first)
                        .unwrap();
                } else {
                    codec.encode_slice(&src, &mut got_c).unwrap();
                    codec.quantize_slice(&src, &mut got_q).unwrap();
                }
                for i in 0..src.len() {
                    let x = src[i].to_bits();
                    assert_eq!(got_c[i], codes[i], "{f} {conv:?} {isa}: encode {x:#010x}");
                    assert_eq!(
                        got_q[i].to_bits(),
                        values[i],
                        "{f} {conv:?} {isa}: quantize {x:#010x}"
                    );
                }
            }
        });
    }
}

/// Decoding on every level equals `Format::decode` for every byte (bits above the format's
/// width included: they are ignored), at every offset of the 64-wide loop and its tails, plain
/// and scaled, for every format of ≤ 8 bits (widths 2 to 8).
#[test]
fn decode_every_byte_on_every_level() {
    let bytes: Vec<u8> = (0..=255u8)
        .chain((0..=255u8).rev())
        .chain(0..=100)
        .collect();
    for f in formats().into_iter().filter(|f| f.bits() <= 8) {
        for isa in Isa::available() {
            let codec = Codec::new(f, Conversion::REFERENCE)
                .with_isa(isa)
                .unwrap()
                .with_parallel(false);
            for start in [0, 1, 7, 63] {
                for len in [bytes.len() - start, 64, 65, 17, 3] {
                    let src = &bytes[start..start + len];
                    let mut d = vec![0f32; len];
                    codec.decode_slice(src, &mut d).unwrap();
                    let mut ds = vec![0f32; len];
                    codec.decode_scaled_slice(src, &mut ds, 0.375).unwrap();
                    for (i, &c) in src.iter().enumerate() {
                        let want = f.decode(c as u32);
                        assert_eq!(
                            d[i].to_bits(),
                            want.to_bits(),
                            "{f} {isa}: decode({c:#04x})"
                        );
                        assert_eq!(
                            ds[i].to_bits(),
                            (want * 0.375).to_bits(),
                            "{f} {isa}: decode_scaled({c:#04x})"
                        );
                    }
                }
            }
        }
    }
}
