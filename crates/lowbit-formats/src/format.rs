//! [`Format`]: the runtime value naming a number format, its parser, printer and scalar codec.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{FormatError, Result};
use crate::integer::IntFormat;
use crate::minifloat::{Encoding, MiniFloat};
use crate::rounding::Conversion;

/// A number format: a minifloat (`ExMy` with a special-value convention) or an integer grid.
///
/// Parse one from its name (`"e4m3fn"`, `"fp8_e5m2"`, `"mxfp4"`-style element names, `"int4"`,
/// `"e5m3_b11_fnuz"`, …; see [`Format::from_str`]) or use the named constants. `Display` prints
/// the canonical name, which parses back to the same value.
///
/// ```
/// use lowbit_formats::Format;
/// let f: Format = "fp8_e4m3".parse()?;
/// assert_eq!(f, Format::E4M3FN);
/// assert_eq!(f.encode(464.0), 0x7e);          // a tie: rounds to even, 448
/// assert!(f.decode(f.encode(465.0)).is_nan()); // overflow is NaN in E4M3FN
/// assert_eq!(f.quantize(0.3), 0.3125);
/// # Ok::<(), lowbit_formats::FormatError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// A binary minifloat.
    Float(MiniFloat),
    /// An integer grid.
    Int(IntFormat),
}

/// The named formats, their canonical name first, then aliases (all lower case).
const NAMED: &[(&str, &[&str], Format)] = &[
    ("e4m3fn", &["float8_e4m3fn"], Format::E4M3FN),
    ("e4m3", &["float8_e4m3"], Format::E4M3),
    ("e5m2", &["float8_e5m2"], Format::E5M2),
    ("e4m3fnuz", &["float8_e4m3fnuz"], Format::E4M3FNUZ),
    ("e5m2fnuz", &["float8_e5m2fnuz"], Format::E5M2FNUZ),
    ("e2m3", &["e2m3fn", "float6_e2m3fn"], Format::E2M3),
    ("e3m2", &["e3m2fn", "float6_e3m2fn"], Format::E3M2),
    ("e2m1", &["e2m1fn", "float4_e2m1fn"], Format::E2M1),
    ("e3m0", &[], Format::E3M0),
    ("e8m0", &["e8m0fnu", "float8_e8m0fnu"], Format::E8M0),
];

impl Format {
    /// OCP 8-bit FP E4M3 (NVIDIA/ml_dtypes `float8_e4m3fn`): bias 7, max 448, no inf, NaN = S.1111.111.
    pub const E4M3FN: Format = Format::Float(MiniFloat::new_unchecked(4, 3, 7, Encoding::Fn));
    /// IEEE-style E4M3 with infinities (ml_dtypes `float8_e4m3`): bias 7, max 240.
    pub const E4M3: Format = Format::Float(MiniFloat::new_unchecked(4, 3, 7, Encoding::Ieee));
    /// OCP 8-bit FP E5M2: bias 15, max 57344, inf and NaN.
    pub const E5M2: Format = Format::Float(MiniFloat::new_unchecked(5, 2, 15, Encoding::Ieee));
    /// E4M3 FNUZ (Graphcore/AMD): bias 8, max 240, single NaN 0x80, no −0.
    pub const E4M3FNUZ: Format = Format::Float(MiniFloat::new_unchecked(4, 3, 8, Encoding::Fnuz));
    /// E5M2 FNUZ: bias 16, max 57344, single NaN 0x80, no −0.
    pub const E5M2FNUZ: Format = Format::Float(MiniFloat::new_unchecked(5, 2, 16, Encoding::Fnuz));
    /// OCP MX FP6 E2M3: bias 1, max 7.5, no inf/NaN.
    pub const E2M3: Format = Format::Float(MiniFloat::new_unchecked(2, 3, 1, Encoding::Finite));
    /// OCP MX FP6 E3M2: bias 3, max 28, no inf/NaN.
    pub const E3M2: Format = Format::Float(MiniFloat::new_unchecked(3, 2, 3, Encoding::Finite));
    /// OCP MX / NVFP4 FP4 E2M1: bias 1, max 6, no inf/NaN.
    pub const E2M1: Format = Format::Float(MiniFloat::new_unchecked(2, 1, 1, Encoding::Finite));
    /// FP4 with no mantissa bits (exponent only, as QBench lists it): bias 3, values 0 and ±2^(−2..4).
    pub const E3M0: Format = Format::Float(MiniFloat::new_unchecked(3, 0, 3, Encoding::Finite));
    /// OCP MX E8M0 scale: unsigned, 2^(k−127), no zero, NaN = 0xFF.
    pub const E8M0: Format = Format::Float(MiniFloat::new_unchecked(8, 0, 127, Encoding::Fnu));
    /// ml_dtypes `float8_e3m4`: IEEE-like E3M4, bias 3, max 15.5, inf and NaN (the generic `e3m4`).
    pub const E3M4: Format = Format::Float(MiniFloat::new_unchecked(3, 4, 3, Encoding::Ieee));
    /// ml_dtypes `float8_e4m3b11fnuz` (Graphcore): bias 11, max 30, single NaN 0x80, no −0
    /// (the generic `e4m3_b11_fnuz`).
    pub const E4M3B11FNUZ: Format =
        Format::Float(MiniFloat::new_unchecked(4, 3, 11, Encoding::Fnuz));
    /// Signed 8-bit integer, narrow range ±127.
    pub const INT8: Format = Format::Int(IntFormat::new_unchecked(8, true, true));
    /// Signed 4-bit integer, narrow range ±7.
    pub const INT4: Format = Format::Int(IntFormat::new_unchecked(4, true, true));

    /// The named formats (not the integers), in the order of the format table.
    pub fn named() -> impl Iterator<Item = Format> {
        NAMED.iter().map(|(_, _, f)| *f)
    }

    /// A minifloat format; see [`MiniFloat::new`].
    pub fn minifloat(
        exp_bits: u32,
        man_bits: u32,
        bias: Option<i32>,
        encoding: Encoding,
    ) -> Result<Format> {
        MiniFloat::new(exp_bits, man_bits, bias, encoding).map(Format::Float)
    }

    /// An integer format; see [`IntFormat::new`].
    pub fn int(bits: u32, signed: bool, narrow: bool) -> Result<Format> {
        IntFormat::new(bits, signed, narrow).map(Format::Int)
    }

    /// Code width in bits.
    pub const fn bits(&self) -> u32 {
        match self {
            Format::Float(f) => f.bits(),
            Format::Int(i) => i.bits(),
        }
    }

    /// Mask of the valid code bits.
    pub const fn code_mask(&self) -> u32 {
        if self.bits() >= 32 {
            u32::MAX
        } else {
            (1u32 << self.bits()) - 1
        }
    }

    /// Decodes a code to `f32` (exact). Bits above the format's width are ignored.
    pub fn decode(&self, code: u32) -> f32 {
        match self {
            Format::Float(f) => f.decode(code),
            Format::Int(i) => i.decode(code),
        }
    }

    /// Encodes with the default conversion (ml_dtypes `astype` semantics for the minifloats:
    /// nearest-even, the format's own overflow rule; integers saturate).
    pub fn encode(&self, x: f32) -> u32 {
        self.encode_with(x, Conversion::REFERENCE, 0)
    }

    /// Encodes under `conv`; `rand` is the stochastic-rounding word
    /// ([`crate::stochastic_bits`]), ignored by the deterministic rules.
    pub fn encode_with(&self, x: f32, conv: Conversion, rand: u32) -> u32 {
        match self {
            Format::Float(f) => f.encode_with(x, conv, rand),
            Format::Int(i) => i.encode_with(x, conv, rand),
        }
    }

    /// Fake-quantizes with the default conversion: `decode(encode(x))`.
    pub fn quantize(&self, x: f32) -> f32 {
        self.decode(self.encode(x))
    }

    /// Fake-quantizes under `conv`: `decode(encode_with(x, conv, rand))`.
    pub fn quantize_with(&self, x: f32, conv: Conversion, rand: u32) -> f32 {
        self.decode(self.encode_with(x, conv, rand))
    }

    /// The minifloat parameters, if this is a minifloat.
    pub const fn as_minifloat(&self) -> Option<&MiniFloat> {
        match self {
            Format::Float(f) => Some(f),
            Format::Int(_) => None,
        }
    }

    /// The integer parameters, if this is an integer format.
    pub const fn as_int(&self) -> Option<&IntFormat> {
        match self {
            Format::Int(i) => Some(i),
            Format::Float(_) => None,
        }
    }

    /// Whether the format has negative values.
    pub const fn is_signed(&self) -> bool {
        match self {
            Format::Float(f) => f.is_signed(),
            Format::Int(i) => i.is_signed(),
        }
    }

    /// Largest finite value.
    pub fn max_value(&self) -> f32 {
        match self {
            Format::Float(f) => f.decode(f.max_magnitude_code()),
            Format::Int(i) => i.max_value() as f32,
        }
    }

    /// The canonical name of a named format, if this is one.
    pub fn canonical_name(&self) -> Option<&'static str> {
        NAMED.iter().find(|(_, _, f)| f == self).map(|(n, _, _)| *n)
    }
}

/// The convention an `eXmY` name without suffix gets: that of the named format with the same
/// widths if there is one (`e4m3` → ieee, `e2m3` → none, `e8m0` → fnu), otherwise `ieee` for
/// formats of 8 bits or more (like ml_dtypes' `float8_e3m4`, IEEE half, bfloat16) and `none`
/// for narrower ones (like the OCP MX FP6/FP4 family).
pub fn default_encoding(exp_bits: u32, man_bits: u32) -> Encoding {
    const NAMED_DEFAULTS: &[(u32, u32, Encoding)] = &[
        (4, 3, Encoding::Ieee),
        (5, 2, Encoding::Ieee),
        (2, 3, Encoding::Finite),
        (3, 2, Encoding::Finite),
        (2, 1, Encoding::Finite),
        (3, 0, Encoding::Finite),
        (8, 0, Encoding::Fnu),
    ];
    match NAMED_DEFAULTS
        .iter()
        .find(|(x, y, _)| *x == exp_bits && *y == man_bits)
    {
        Some((_, _, e)) => *e,
        None if 1 + exp_bits + man_bits >= 8 => Encoding::Ieee,
        None => Encoding::Finite,
    }
}

impl fmt::Display for Format {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.canonical_name() {
            return out.write_str(name);
        }
        match self {
            Format::Int(i) => {
                let u = if i.is_signed() { "" } else { "u" };
                let full = if i.is_signed() && !i.is_narrow() {
                    "_full"
                } else {
                    ""
                };
                write!(out, "{u}int{}{full}", i.bits())
            }
            Format::Float(m) => {
                let (x, y, enc) = (m.exp_bits(), m.man_bits(), m.encoding());
                write!(out, "e{x}m{y}")?;
                if m.bias() != MiniFloat::default_bias(x, enc) {
                    write!(out, "_b{}", m.bias())?;
                }
                if enc != default_encoding(x, y) {
                    write!(out, "_{}", enc.suffix())?;
                }
                Ok(())
            }
        }
    }
}

const NAME_HELP: &str = "expected a named format (e4m3fn, e4m3, e5m2, e4m3fnuz, e5m2fnuz, e2m3, e3m2, e2m1, e3m0, e8m0; \
bfloat16/bf16 and float16/fp16/half for e8m7 and e5m10), an integer (int2..int16, uint2..uint16, optional _full or \
_narrow), or eXmY with 1<=X<=8, 0<=Y<=10 and optional _b<bias> and _<convention> (ieee, fn, fnuz, none); a width \
prefix fp8_/fp6_/fp4_ or ml_dtypes' float8_/float6_/float4_ is allowed and checked";

/// Width prefixes, checked against the format's bits: the frameworks' `fp8_` and ml_dtypes'
/// type names (`float8_e3m4`, `float8_e4m3b11fnuz`, …).
const WIDTH_PREFIXES: &[(&str, u32)] = &[
    ("fp8_", 8),
    ("fp6_", 6),
    ("fp4_", 4),
    ("float8_", 8),
    ("float6_", 6),
    ("float4_", 4),
];

/// The IEEE 16-bit floats, by their framework names: generic `eXmY` formats under the hood.
const SIXTEEN_BIT: &[(&str, u32, u32)] = &[
    ("bfloat16", 8, 7),
    ("bf16", 8, 7),
    ("float16", 5, 10),
    ("fp16", 5, 10),
    ("half", 5, 10),
];

impl Format {
    /// The known name (named formats, their aliases, the 16-bit names) closest to `name` by edit
    /// distance, if it is within two edits (and closer than half the name's length): what a
    /// parse error suggests for a misspelt name (`e4m3fm` → `e4m3fn`).
    pub fn closest_name(name: &str) -> Option<&'static str> {
        let names = NAMED
            .iter()
            .flat_map(|(n, aliases, _)| std::iter::once(*n).chain(aliases.iter().copied()))
            .chain(SIXTEEN_BIT.iter().map(|(n, _, _)| *n));
        closest(name, names)
    }
}

/// The candidate closest to `name` (ASCII case-insensitive edit distance), if within two edits
/// and closer than half of `name`'s length; ties go to the first candidate.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let name = name.trim().to_ascii_lowercase();
    let limit = 2.min(name.len().saturating_sub(1) / 2);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&name, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance on bytes (names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

impl FromStr for Format {
    type Err = FormatError;

    /// Parses a format name, case-insensitively. See [`Format`] and docs/formats.md.
    fn from_str(s: &str) -> Result<Format> {
        let lower = s.trim().to_ascii_lowercase();
        let err = |reason: String| FormatError::UnknownFormat {
            name: s.to_string(),
            reason,
        };
        if lower.is_empty() {
            return Err(err(format!("the name is empty; {NAME_HELP}")));
        }
        if let Some(&(_, e, m)) = SIXTEEN_BIT.iter().find(|(n, _, _)| *n == lower) {
            return Format::minifloat(e, m, None, Encoding::Ieee);
        }
        // Optional width prefix, checked against the result: `fp8_` (the frameworks' spelling)
        // or `float8_` (ml_dtypes' type names, e.g. float8_e3m4, float8_e4m3b11fnuz).
        let (prefix, body) = match WIDTH_PREFIXES.iter().find(|(p, _)| lower.starts_with(p)) {
            Some(&(p, bits)) => (Some((p, bits)), &lower[p.len()..]),
            None => (None, lower.as_str()),
        };
        // `fp8_e4m3` names the OCP / NVIDIA FP8 (E4M3FN), as every framework's `fp8_e4m3`
        // does; the bare `e4m3` and ml_dtypes' `float8_e4m3` are the IEEE-like type with
        // infinities.
        let format = if prefix == Some(("fp8_", 8)) && body == "e4m3" {
            Format::E4M3FN
        } else {
            parse_body(body).map_err(|reason| {
                // A well-formed `eXmY` with a bad width is no misspelling: no suggestion.
                let plain_exmy = body.strip_prefix('e').is_some_and(|r| {
                    let (x, r) = split_digits(r);
                    let r = r.strip_prefix('m').unwrap_or("-");
                    let (y, r) = split_digits(r);
                    !x.is_empty() && !y.is_empty() && r.is_empty()
                });
                match Format::closest_name(&lower).filter(|_| !plain_exmy) {
                    Some(near) => err(format!("did you mean `{near}`? {reason}")),
                    None => err(reason),
                }
            })?
        };
        if let Some((p, bits)) = prefix
            && format.bits() != bits
        {
            return Err(err(format!(
                "the prefix {p} says {bits} bits but `{body}` has {} bits",
                format.bits()
            )));
        }
        Ok(format)
    }
}

fn parse_body(body: &str) -> std::result::Result<Format, String> {
    for (name, aliases, f) in NAMED {
        if body == *name || aliases.contains(&body) {
            return Ok(*f);
        }
    }
    if let Some(rest) = body
        .strip_prefix("uint")
        .or_else(|| body.strip_prefix("int"))
    {
        let signed = !body.starts_with('u');
        let (digits, suffix) = split_digits(rest);
        let bits: u32 = digits
            .parse()
            .map_err(|_| format!("`{body}`: missing bit width; {NAME_HELP}"))?;
        let narrow = match suffix {
            "" => signed,
            "_narrow" if signed => true,
            "_full" => false,
            other => {
                return Err(format!(
                    "`{other}` is not an integer option (use _full or _narrow, signed only)"
                ));
            }
        };
        return IntFormat::new(bits, signed, narrow)
            .map(Format::Int)
            .map_err(|e| e.to_string());
    }
    let Some(rest) = body.strip_prefix('e') else {
        return Err(NAME_HELP.to_string());
    };
    let (xs, rest) = split_digits(rest);
    let x: u32 = xs.parse().map_err(|_| NAME_HELP.to_string())?;
    let Some(rest) = rest.strip_prefix('m') else {
        return Err(NAME_HELP.to_string());
    };
    let (ys, mut rest) = split_digits(rest);
    let y: u32 = ys.parse().map_err(|_| NAME_HELP.to_string())?;
    let mut bias: Option<i32> = None;
    let mut encoding: Option<Encoding> = None;
    while !rest.is_empty() {
        rest = rest.strip_prefix('_').unwrap_or(rest);
        if let Some(b) = rest.strip_prefix('b') {
            let (sign, b) = match b.strip_prefix('-') {
                Some(b) => (-1, b),
                None => (1, b),
            };
            let (ds, r) = split_digits(b);
            let v: i32 = ds.parse().map_err(|_| {
                format!("`b` must be followed by the bias, e.g. e4m3_b11 (in `{body}`)")
            })?;
            if bias.replace(sign * v).is_some() {
                return Err(format!("the bias is given twice in `{body}`"));
            }
            rest = r;
            continue;
        }
        // Longest convention word first: fnuz before fnu before fn.
        let words = [
            ("fnuz", Encoding::Fnuz),
            ("fnu", Encoding::Fnu),
            ("fn", Encoding::Fn),
            ("ieee", Encoding::Ieee),
            ("none", Encoding::Finite),
            ("finite", Encoding::Finite),
        ];
        let Some((w, e)) = words.iter().find(|(w, _)| rest.starts_with(w)) else {
            return Err(format!(
                "`{rest}` is not a format option in `{body}` (use _b<bias> or one of _ieee, _fn, _fnuz, _none)"
            ));
        };
        if encoding.replace(*e).is_some() {
            return Err(format!("the convention is given twice in `{body}`"));
        }
        rest = &rest[w.len()..];
    }
    if !(1..=8).contains(&x) || y > 10 {
        // Let MiniFloat::new produce the precise message.
        return MiniFloat::new(x, y, bias, Encoding::Finite)
            .map(Format::Float)
            .map_err(|e| e.to_string());
    }
    let encoding = encoding.unwrap_or_else(|| default_encoding(x, y));
    MiniFloat::new(x, y, bias, encoding)
        .map(Format::Float)
        .map_err(|e| e.to_string())
}

fn split_digits(s: &str) -> (&str, &str) {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    s.split_at(n)
}

impl Serialize for Format {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Format {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Format, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
