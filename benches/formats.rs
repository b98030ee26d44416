//! Slice throughput of the format codecs, beside the limit (a memcpy moving the same bytes) and
//! the peers (`half`'s f32 ↔ f16 slice conversion, the `float8` crate's `F8E4M3`).
//!
//! ```text
//! cargo bench --bench formats -- --warm-up-time 1 --measurement-time 3
//! cargo bench --bench formats -- quantize/          # one group
//! ```
//!
//! Groups `encode`, `decode`, `quantize` run 16 Mi elements through e4m3fn, e5m2, e2m1, int8 and
//! e3m4 (a generic eXmY), single-threaded (`1t`) and on all rayon threads (`mt`); group
//! `quantize_isa` pins each instruction-set level for e4m3fn; `quantize_stochastic` runs seeded
//! stochastic rounding beside the scalar reference. Every throughput is **bytes read +
//! bytes written** (encode: 4 + 1 bytes per element, decode: 1 + 4, quantize: 4 + 4), and each
//! group's `memcpy` copies a buffer of half that many bytes, so it moves exactly the same
//! traffic. Inputs are seeded, span each format's range (underflow to overflow) and carry ~3%
//! special values (NaN, ±inf, ±0, f32 subnormals, values past the overflow threshold).

use std::error::Error;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, measurement::WallTime};
use float8::F8E4M3;
use half::{f16, slice::HalfFloatSliceExt};
use lowbit::formats::{Codec, Conversion, Format, Isa, Overflow, Rounding, stochastic_bits};
use rayon::prelude::*;

/// Elements per benchmark: 16 Mi, 64 MiB of f32, far beyond the last-level cache.
const N: usize = 1 << 24;

/// The benchmarked formats, by name.
const FORMATS: &[&str] = &["e4m3fn", "e5m2", "e2m1", "int8", "e3m4"];

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// SplitMix64: a tiny seeded generator, so inputs are identical on every run and machine.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }
}

/// `n` inputs for `format`: log-uniform magnitudes from a quarter of its smallest step to twice
/// its largest value (integers: uniform over ±1.1·max), random signs, and ~3% specials.
fn inputs(format: Format, n: usize, seed: u64) -> Vec<f32> {
    let facts = format.facts();
    let max = facts.max;
    let tiny = facts.min_subnormal.or(facts.min_normal).unwrap_or(1.0);
    let (lo, hi) = ((tiny / 4.0).log2(), (max * 2.0).log2());
    let specials = [
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        f32::from_bits(1),         // smallest f32 subnormal
        -f32::from_bits(0x3_0000), // an f32 subnormal
        max * 1.5,                 // past the overflow threshold
        -max * 3.0,
    ];
    let mut rng = SplitMix(seed);
    (0..n)
        .map(|_| {
            let r = rng.next();
            if r.is_multiple_of(32) {
                return specials[(r >> 8) as usize % specials.len()];
            }
            let sign = if r & 2 != 0 { -1.0 } else { 1.0 };
            let magnitude = match format {
                Format::Int(_) => rng.unit() * max * 1.1,
                Format::Float(_) => (lo + rng.unit() * (hi - lo)).exp2(),
            };
            sign * magnitude
        })
        .collect()
}

/// A group sized for 16 Mi-element iterations: few samples, flat sampling.
fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sampling_mode(SamplingMode::Flat);
    g
}

/// `memcpy` of `bytes / 2` bytes: reads and writes `bytes` in total, the traffic limit.
fn memcpy(g: &mut BenchmarkGroup<'_, WallTime>, bytes: usize) {
    let src = vec![1u8; bytes / 2];
    let mut dst = vec![0u8; bytes / 2];
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("memcpy/1t", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&src)))
    });
    g.bench_function("memcpy/mt", |b| {
        b.iter(|| {
            dst.par_chunks_mut(1 << 17)
                .zip(black_box(&src).par_chunks(1 << 17))
                .for_each(|(d, s)| d.copy_from_slice(s))
        })
    });
}

/// Single-threaded and all-threads codecs for one format, reference conversion.
fn codecs(format: Format) -> [(&'static str, Codec); 2] {
    let codec = Codec::new(format, Conversion::REFERENCE);
    [("1t", codec.clone().with_parallel(false)), ("mt", codec)]
}

fn bench_encode(c: &mut Criterion) -> Result<()> {
    let mut g = group(c, "encode");
    memcpy(&mut g, N * 5);
    for name in FORMATS {
        let format: Format = name.parse()?;
        let src = inputs(format, N, 1);
        let mut dst = vec![0u8; N];
        g.throughput(Throughput::Bytes((N * 5) as u64));
        for (threads, codec) in codecs(format) {
            codec.encode_slice(&src, &mut dst)?;
            g.bench_function(format!("{name}/{threads}"), |b| {
                b.iter(|| codec.encode_slice(black_box(&src), &mut dst))
            });
        }
        if *name == "e4m3fn" {
            g.bench_function("float8_F8E4M3/1t", |b| {
                b.iter(|| {
                    for (d, &s) in dst.iter_mut().zip(black_box(&src)) {
                        *d = F8E4M3::from_f32(s).to_bits();
                    }
                })
            });
            let mut halfs = vec![f16::ZERO; N];
            g.throughput(Throughput::Bytes((N * 6) as u64));
            g.bench_function("half_f16/1t", |b| {
                b.iter(|| halfs.convert_from_f32_slice(black_box(&src)))
            });
        }
    }
    g.finish();
    Ok(())
}

fn bench_decode(c: &mut Criterion) -> Result<()> {
    let mut g = group(c, "decode");
    memcpy(&mut g, N * 5);
    for name in FORMATS {
        let format: Format = name.parse()?;
        let mut codes = vec![0u8; N];
        format.encode_slice(&inputs(format, N, 2), &mut codes)?;
        let mut dst = vec![0f32; N];
        g.throughput(Throughput::Bytes((N * 5) as u64));
        for (threads, codec) in codecs(format) {
            codec.decode_slice(&codes, &mut dst)?;
            g.bench_function(format!("{name}/{threads}"), |b| {
                b.iter(|| codec.decode_slice(black_box(&codes), &mut dst))
            });
        }
        if *name == "e4m3fn" {
            g.bench_function("float8_F8E4M3/1t", |b| {
                b.iter(|| {
                    for (d, &s) in dst.iter_mut().zip(black_box(&codes)) {
                        *d = F8E4M3::from_bits(s).to_f32();
                    }
                })
            });
            let mut halfs = vec![f16::ZERO; N];
            halfs.convert_from_f32_slice(&inputs(format, N, 2));
            g.throughput(Throughput::Bytes((N * 6) as u64));
            g.bench_function("half_f16/1t", |b| {
                b.iter(|| black_box(&halfs).convert_to_f32_slice(&mut dst))
            });
        }
    }
    g.finish();
    Ok(())
}

fn bench_quantize(c: &mut Criterion) -> Result<()> {
    let mut g = group(c, "quantize");
    memcpy(&mut g, N * 8);
    for name in FORMATS {
        let format: Format = name.parse()?;
        let src = inputs(format, N, 3);
        let mut dst = vec![0f32; N];
        g.throughput(Throughput::Bytes((N * 8) as u64));
        for (threads, codec) in codecs(format) {
            codec.quantize_slice(&src, &mut dst)?;
            g.bench_function(format!("{name}/{threads}"), |b| {
                b.iter(|| codec.quantize_slice(black_box(&src), &mut dst))
            });
        }
        if *name == "e4m3fn" {
            g.bench_function("float8_F8E4M3/1t", |b| {
                b.iter(|| {
                    for (d, &s) in dst.iter_mut().zip(black_box(&src)) {
                        *d = F8E4M3::from_f32(s).to_f32();
                    }
                })
            });
            // half's round trip goes through an f16 buffer: 4 + 2 + 2 + 4 bytes per element.
            let mut halfs = vec![f16::ZERO; N];
            g.throughput(Throughput::Bytes((N * 12) as u64));
            g.bench_function("half_f16/1t", |b| {
                b.iter(|| {
                    halfs.convert_from_f32_slice(black_box(&src));
                    halfs.convert_to_f32_slice(&mut dst);
                })
            });
        }
    }
    g.finish();
    Ok(())
}

/// e4m3fn quantize, single-threaded, on each instruction-set level this CPU has.
fn bench_quantize_isa(c: &mut Criterion) -> Result<()> {
    let mut g = group(c, "quantize_isa");
    let format = Format::E4M3FN;
    let src = inputs(format, N, 3);
    let mut dst = vec![0f32; N];
    g.throughput(Throughput::Bytes((N * 8) as u64));
    for isa in Isa::ALL {
        let Ok(codec) = Codec::new(format, Conversion::REFERENCE)
            .with_parallel(false)
            .with_isa(isa)
        else {
            eprintln!("quantize_isa: skipping {isa}, not available on this CPU");
            continue;
        };
        codec.quantize_slice(&src, &mut dst)?;
        g.bench_function(format!("e4m3fn/{isa}"), |b| {
            b.iter(|| codec.quantize_slice(black_box(&src), &mut dst))
        });
    }
    g.finish();
    Ok(())
}

/// Stochastic rounding (seeded, saturating): e4m3fn, e2m1 and int8 on the lane kernels, which
/// generate the random words in registers, beside the scalar reference element by element
/// (what every stochastic conversion ran on before) and e4m3fn's nearest-even quantize.
fn bench_quantize_stochastic(c: &mut Criterion) -> Result<()> {
    let mut g = group(c, "quantize_stochastic");
    memcpy(&mut g, N * 8);
    g.throughput(Throughput::Bytes((N * 8) as u64));
    let conv = Conversion::new(Rounding::Stochastic { seed: 7 }, Overflow::Saturate);
    for name in ["e4m3fn", "e2m1", "int8"] {
        let format: Format = name.parse()?;
        let src = inputs(format, N, 6);
        let mut dst = vec![0f32; N];
        let codec = Codec::new(format, conv);
        for (threads, codec) in [("1t", codec.clone().with_parallel(false)), ("mt", codec)] {
            codec.quantize_slice(&src, &mut dst)?;
            g.bench_function(format!("{name}/{threads}"), |b| {
                b.iter(|| codec.quantize_slice(black_box(&src), &mut dst))
            });
        }
        if name == "e4m3fn" {
            g.bench_function("e4m3fn_reference/1t", |b| {
                b.iter(|| {
                    for (i, (d, &s)) in dst.iter_mut().zip(black_box(&src)).enumerate() {
                        *d = format.quantize_with(s, conv, stochastic_bits(7, i as u64));
                    }
                })
            });
            let nearest = Codec::new(format, Conversion::SATURATE).with_parallel(false);
            g.bench_function("e4m3fn_nearest_even/1t", |b| {
                b.iter(|| nearest.quantize_slice(black_box(&src), &mut dst))
            });
        }
    }
    g.finish();
    Ok(())
}

/// Thread scaling where memory is not the limit: e4m3fn quantize of 1 Mi elements (4 MiB in,
/// 4 MiB out, cache-resident after the first iteration), one thread against all.
fn bench_quantize_in_cache(c: &mut Criterion) -> Result<()> {
    const M: usize = 1 << 20;
    let mut g = c.benchmark_group("quantize_in_cache");
    g.sample_size(20);
    g.throughput(Throughput::Bytes((M * 8) as u64));
    let format = Format::E4M3FN;
    let src = inputs(format, M, 5);
    let mut dst = vec![0f32; M];
    for (threads, codec) in codecs(format) {
        codec.quantize_slice(&src, &mut dst)?;
        g.bench_function(format!("e4m3fn/{threads}"), |b| {
            b.iter(|| codec.quantize_slice(black_box(&src), &mut dst))
        });
    }
    g.bench_function("memcpy/1t", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&src)))
    });
    g.finish();
    Ok(())
}

/// Simulated accumulation: a `[64, 1024] · [1024, 64]` product (4 Mi multiply-adds) with
/// the sums in FP32, BF16 and FP22 (truncated, FP32 every 128), one dot product at a time
/// (`dot`) and eight interleaved (`dot_rows`), beside the plain f32 loop (the peer: what the
/// simulation costs over the arithmetic it replaces).
fn bench_accumulate(c: &mut Criterion) -> Result<()> {
    use lowbit::formats::{Accumulator, AccumulatorRounding};
    const K: usize = 1024;
    const ROWS: usize = 64;
    let mut g = c.benchmark_group("accumulate_4M_macs");
    g.sample_size(10);
    g.throughput(Throughput::Elements((ROWS * ROWS * K) as u64));
    let a = inputs(Format::E4M3FN, ROWS * K, 7);
    let b = inputs(Format::E4M3FN, ROWS * K, 8);
    let (a, b): (Vec<f32>, Vec<f32>) = (
        a.iter()
            .map(|x| Format::E4M3FN.quantize(x.clamp(-448.0, 448.0)))
            .collect(),
        b.iter()
            .map(|x| Format::E4M3FN.quantize(x.clamp(-448.0, 448.0)))
            .collect(),
    );
    let mut out = vec![0f32; ROWS * ROWS];
    g.bench_function("f32_loop", |bch| {
        bch.iter(|| {
            for (i, x) in a.chunks(K).enumerate() {
                for (j, w) in b.chunks(K).enumerate() {
                    let mut s = 0f32;
                    for (p, q) in x.iter().zip(w) {
                        s += p * q;
                    }
                    out[i * ROWS + j] = s;
                }
            }
            black_box(&out);
        })
    });
    for (name, spec, r, chunk) in [
        ("fp32", "fp32", AccumulatorRounding::NearestEven, None),
        ("bf16", "bf16", AccumulatorRounding::NearestEven, None),
        (
            "fp22_tz_c128",
            "fp22",
            AccumulatorRounding::TowardZero,
            Some(128),
        ),
    ] {
        let acc = Accumulator::new(spec.parse()?, r, chunk)?;
        g.bench_function(format!("{name}/dot"), |bch| {
            bch.iter(|| {
                for (i, x) in a.chunks(K).enumerate() {
                    for (j, w) in b.chunks(K).enumerate() {
                        out[i * ROWS + j] = acc.dot(x, w);
                    }
                }
                black_box(&out);
            })
        });
        g.bench_function(format!("{name}/dot_rows"), |bch| {
            bch.iter(|| {
                for (x, o) in a.chunks(K).zip(out.chunks_mut(ROWS)) {
                    acc.dot_rows(x, &b, K, o);
                }
                black_box(&out);
            })
        });
    }
    g.finish();
    Ok(())
}

fn main() -> Result<()> {
    // Short defaults so the whole file runs in minutes; command-line flags override them.
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_encode(&mut c)?;
    bench_decode(&mut c)?;
    bench_quantize(&mut c)?;
    bench_quantize_isa(&mut c)?;
    bench_quantize_stochastic(&mut c)?;
    bench_quantize_in_cache(&mut c)?;
    bench_accumulate(&mut c)?;
    c.final_summary();
    Ok(())
}
