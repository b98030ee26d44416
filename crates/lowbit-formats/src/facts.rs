//! Format facts as data, and the independent table of representable values.

use serde::Serialize;

use crate::format::Format;
use crate::minifloat::Encoding;

/// Everything a user (or a compliance check) needs to know about a format, computed from its
/// definition by decoding every code.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FormatFacts {
    /// Canonical name.
    pub name: String,
    /// Code width in bits.
    pub bits: u32,
    /// Whether negative values exist.
    pub signed: bool,
    /// Exponent bits (minifloats).
    pub exp_bits: Option<u32>,
    /// Mantissa bits (minifloats).
    pub man_bits: Option<u32>,
    /// Exponent bias (minifloats).
    pub bias: Option<i32>,
    /// Special-value convention (minifloats).
    pub encoding: Option<Encoding>,
    /// Largest finite value.
    pub max: f32,
    /// Smallest finite value (most negative).
    pub min: f32,
    /// Smallest positive normal value (minifloats).
    pub min_normal: Option<f32>,
    /// Smallest positive subnormal value, if the format has subnormals.
    pub min_subnormal: Option<f32>,
    /// Codes that decode to ±inf.
    pub inf_codes: Vec<u32>,
    /// Codes that decode to NaN.
    pub nan_codes: Vec<u32>,
    /// Number of codes that decode to finite values (±0 counted twice where both exist).
    pub finite_codes: usize,
    /// Number of distinct finite values (±0 counted once).
    pub finite_values: usize,
}

impl Format {
    /// The facts of this format.
    pub fn facts(&self) -> FormatFacts {
        let n = 1u64 << self.bits();
        let mut inf_codes = Vec::new();
        let mut nan_codes = Vec::new();
        let mut finite_codes = 0usize;
        for c in 0..n as u32 {
            // The narrow range leaves −2^(b−1) unused.
            if let Format::Int(i) = self
                && (i.decode(c) as i32) < i.min_value()
            {
                continue;
            }
            let v = self.decode(c);
            if v.is_nan() {
                nan_codes.push(c);
            } else if v.is_infinite() {
                inf_codes.push(c);
            } else {
                finite_codes += 1;
            }
        }
        let values = self.values();
        let (min_normal, min_subnormal) = match self {
            Format::Float(m) => {
                let min_normal = match m.encoding() {
                    Encoding::Fnu => self.decode(0),
                    _ => self.decode(1 << m.man_bits()),
                };
                let sub =
                    (m.man_bits() > 0 && m.encoding() != Encoding::Fnu).then(|| self.decode(1));
                (Some(min_normal), sub)
            }
            Format::Int(_) => (None, None),
        };
        let mf = self.as_minifloat();
        FormatFacts {
            name: self.to_string(),
            bits: self.bits(),
            signed: self.is_signed(),
            exp_bits: mf.map(|m| m.exp_bits()),
            man_bits: mf.map(|m| m.man_bits()),
            bias: mf.map(|m| m.bias()),
            encoding: mf.map(|m| m.encoding()),
            max: values.last().copied().unwrap_or(0.0),
            min: values.first().copied().unwrap_or(0.0),
            min_normal,
            min_subnormal,
            inf_codes,
            nan_codes,
            finite_codes,
            finite_values: values.len(),
        }
    }

    /// Every finite value of the format, sorted ascending, ±0 once (as +0).
    ///
    /// This table is built by decoding codes, independently of the encoder and of every fast
    /// kernel, so compliance checks can test membership against it.
    pub fn values(&self) -> Vec<f32> {
        self.value_table().values
    }

    /// The sorted value table, with membership and neighbour queries.
    pub fn value_table(&self) -> ValueTable {
        let n = 1u64 << self.bits();
        let mut values: Vec<f32> = Vec::with_capacity(n as usize);
        for c in 0..n as u32 {
            if let Format::Int(i) = self
                && (i.decode(c) as i32) < i.min_value()
            {
                continue;
            }
            let v = self.decode(c);
            if v.is_finite() {
                values.push(if v == 0.0 { 0.0 } else { v });
            }
        }
        values.sort_by(f32::total_cmp);
        values.dedup_by(|a, b| a.to_bits() == b.to_bits());
        ValueTable { values }
    }
}

/// The sorted finite values of a format (±0 stored once as +0).
#[derive(Clone, Debug, PartialEq)]
pub struct ValueTable {
    values: Vec<f32>,
}

impl ValueTable {
    /// The values, ascending.
    pub fn as_slice(&self) -> &[f32] {
        &self.values
    }

    /// Whether `x` is exactly one of the values (−0 counts as 0; NaN and ±inf never do).
    pub fn contains(&self, x: f32) -> bool {
        if !x.is_finite() {
            return false;
        }
        let x = if x == 0.0 { 0.0 } else { x };
        self.values.binary_search_by(|v| v.total_cmp(&x)).is_ok()
    }

    /// The largest value ≤ `x` and the smallest value ≥ `x` (equal when `x` is a value).
    pub fn neighbours(&self, x: f32) -> (Option<f32>, Option<f32>) {
        let x = if x == 0.0 { 0.0 } else { x };
        match self.values.binary_search_by(|v| v.total_cmp(&x)) {
            Ok(i) => (Some(self.values[i]), Some(self.values[i])),
            Err(i) => (
                i.checked_sub(1).map(|j| self.values[j]),
                self.values.get(i).copied(),
            ),
        }
    }
}
