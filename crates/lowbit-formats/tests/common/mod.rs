//! Shared test helpers: the ml_dtypes golden tables and input generators.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lowbit_formats::Format;

/// The eleven 8-bit-or-narrower floats ml_dtypes has (the nine of the formats issue, then
/// float8_e3m4 and float8_e4m3b11fnuz), with their golden-file stem.
pub const GOLDEN: [(&str, Format); 11] = [
    ("e4m3fn", Format::E4M3FN),
    ("e4m3", Format::E4M3),
    ("e5m2", Format::E5M2),
    ("e4m3fnuz", Format::E4M3FNUZ),
    ("e5m2fnuz", Format::E5M2FNUZ),
    ("e2m3fn", Format::E2M3),
    ("e3m2fn", Format::E3M2),
    ("e2m1fn", Format::E2M1),
    ("e8m0fnu", Format::E8M0),
    ("e3m4", Format::E3M4),
    ("e4m3b11fnuz", Format::E4M3B11FNUZ),
];

fn golden_path(stem: &str, ext: &str) -> String {
    format!("{}/tests/golden/{stem}.{ext}", env!("CARGO_MANIFEST_DIR"))
}

fn hex_pairs(stem: &str, ext: &str) -> Vec<(u32, u32)> {
    let path = golden_path(stem, ext);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split_whitespace();
            let a = u32::from_str_radix(it.next().unwrap(), 16).unwrap();
            let b = u32::from_str_radix(it.next().unwrap(), 16).unwrap();
            (a, b)
        })
        .collect()
}

/// Runs of the f32 → code map: `(first f32 bit pattern, code)`, ascending; each run lasts to the
/// next start (the last to 0xffff_ffff).
pub fn runs(stem: &str) -> Vec<(u32, u32)> {
    let r = hex_pairs(stem, "runs");
    assert_eq!(r[0].0, 0, "{stem}: runs must start at 0");
    r
}

/// The golden decode table: `table[code]` = f32 bits.
pub fn decode_table(stem: &str) -> Vec<u32> {
    let pairs = hex_pairs(stem, "decode");
    for (i, (c, _)) in pairs.iter().enumerate() {
        assert_eq!(*c as usize, i, "{stem}: decode table out of order");
    }
    pairs.into_iter().map(|(_, v)| v).collect()
}

/// Golden code of an f32 bit pattern, by binary search in the runs.
pub fn golden_code(runs: &[(u32, u32)], bits: u32) -> u32 {
    let i = runs.partition_point(|(s, _)| *s <= bits) - 1;
    runs[i].1
}

/// Every run boundary with its neighbours: start − 2 ..= start + 1 for every run start.
pub fn boundary_inputs(runs: &[(u32, u32)]) -> Vec<u32> {
    let mut v = Vec::with_capacity(runs.len() * 4 + 4);
    for &(s, _) in runs {
        for d in [-2i64, -1, 0, 1] {
            let b = s as i64 + d;
            if (0..=u32::MAX as i64).contains(&b) {
                v.push(b as u32);
            }
        }
    }
    v.extend([0xFFFF_FFFF, 0x7FFF_FFFF, 0x8000_0000, 0x8000_0001]);
    v.sort_unstable();
    v.dedup();
    v
}

/// Inputs exercising every class: every 2^16 top-half pattern with several low halves (ties
/// of formats with up to 7 mantissa bits sit on them), every value of `format` and the
/// midpoints between neighbours ± 1 ulp, specials and NaN payloads.
pub fn class_inputs(format: &Format) -> Vec<f32> {
    let mut v: Vec<u32> = Vec::with_capacity(1 << 19);
    for hi in 0u32..1 << 16 {
        for lo in [0u32, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF] {
            v.push((hi << 16) | lo);
        }
    }
    let vals = format.values();
    for w in vals.windows(2) {
        let mid = (w[0] as f64 + w[1] as f64) / 2.0;
        let m = mid as f32;
        for b in [
            m.to_bits().wrapping_sub(1),
            m.to_bits(),
            m.to_bits().wrapping_add(1),
        ] {
            v.push(b);
            v.push(b ^ 0x8000_0000);
        }
        v.push(w[0].to_bits());
        v.push(w[1].to_bits());
    }
    // Subnormal f32, NaN payloads, infinities, extremes.
    for b in [
        0u32,
        1,
        2,
        3,
        0x7F_FFFF,
        0x40_0000,
        0x40_0001,
        0x3F_FFFF,
        0x60_0000,
        0x80_0000,
        0x7F80_0000,
        0x7F80_0001,
        0x7FC0_0000,
        0x7FFF_FFFF,
        0x7F7F_FFFF,
        0x0080_0001,
    ] {
        v.push(b);
        v.push(b | 0x8000_0000);
    }
    v.into_iter().map(f32::from_bits).collect()
}

/// A tiny deterministic generator (SplitMix64) for test data.
pub struct SplitMix(pub u64);
impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}
