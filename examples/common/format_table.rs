//! The format table of `docs/formats.md`, rendered from [`Format::facts`].
//!
//! Shared by `examples/format_table.rs` (which prints it and, with `--write-docs`, rewrites the
//! docs) and `tests/docs_format_table.rs` (which fails when the docs have drifted from the code).
//! Both include this file with `#[path]`, so the table has exactly one source.

use std::path::PathBuf;

use lowbit::formats::{Format, FormatError, FormatFacts};

/// Marks the start of the generated table in `docs/formats.md`.
pub const START: &str = "<!-- format-table:start -->";
/// Marks its end.
pub const END: &str = "<!-- format-table:end -->";

/// The rows of the documented table: the named formats, a few integers and generic `eXmY`
/// (among them ml_dtypes' `float8_e3m4` and `float8_e4m3b11fnuz`).
pub const DOC_FORMATS: &[&str] = &[
    "e4m3fn",
    "e4m3",
    "e5m2",
    "e4m3fnuz",
    "e5m2fnuz",
    "e2m3",
    "e3m2",
    "e2m1",
    "e3m0",
    "e8m0",
    "int8",
    "int4",
    "int2",
    "uint8",
    "e3m4",
    "e4m3_b11_fnuz",
    "e5m3_b11_fnuz",
];

/// The command that regenerates the table in the docs.
pub const UPDATE_COMMAND: &str = "cargo run --example format_table -- --write-docs";

/// `docs/formats.md` of this workspace.
pub fn docs_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join("formats.md")
}

/// Parses format names (the documented ones are [`DOC_FORMATS`]).
pub fn parse_all(names: &[&str]) -> Result<Vec<Format>, FormatError> {
    names.iter().map(|n| n.parse()).collect()
}

/// The table as Markdown, columns padded so that it also reads well in a terminal.
pub fn markdown(formats: &[Format]) -> String {
    let header = [
        "format",
        "bits",
        "E",
        "M",
        "bias",
        "convention",
        "max",
        "min normal",
        "min subnormal",
        "±inf codes",
        "NaN codes",
        "finite values (codes)",
    ];
    let rows: Vec<Vec<String>> = formats.iter().map(|f| row(f, &f.facts())).collect();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: &mut dyn Iterator<Item = String>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| {
                let pad = w.saturating_sub(c.chars().count());
                format!("{c}{}", " ".repeat(pad))
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&mut header.iter().map(|h| h.to_string()));
    out += &line(&mut widths.iter().map(|w| "-".repeat(*w)));
    for r in rows {
        out += &line(&mut r.into_iter());
    }
    out
}

/// One row of the table.
fn row(f: &Format, facts: &FormatFacts) -> Vec<String> {
    let dash = || "—".to_string();
    let opt = |v: Option<String>| v.unwrap_or_else(dash);
    let convention = match (facts.encoding, f.as_int()) {
        (Some(e), _) => e.suffix().to_string(),
        (None, Some(i)) if !i.is_signed() => "unsigned".to_string(),
        (None, Some(i)) if i.is_narrow() => "narrow (symmetric)".to_string(),
        (None, _) => "full range".to_string(),
    };
    vec![
        format!("`{}`", facts.name),
        facts.bits.to_string(),
        opt(facts.exp_bits.map(|v| v.to_string())),
        opt(facts.man_bits.map(|v| v.to_string())),
        opt(facts.bias.map(|v| v.to_string())),
        convention,
        value(facts.max),
        opt(facts.min_normal.map(value)),
        opt(facts.min_subnormal.map(value)),
        codes(&facts.inf_codes, facts.bits),
        codes(&facts.nan_codes, facts.bits),
        format!("{} ({})", facts.finite_values, facts.finite_codes),
    ]
}

/// A value as a short exact string: powers of two far from 1 as `2^k`, the rest in decimal.
fn value(v: f32) -> String {
    let bits = v.abs().to_bits();
    let pow2_exponent = match bits >> 23 {
        0 if bits.is_power_of_two() => Some(bits.trailing_zeros() as i32 - 149), // f32 subnormal
        0 => None,
        e if bits & 0x7F_FFFF == 0 => Some(e as i32 - 127),
        _ => None,
    };
    if let Some(k) = pow2_exponent.filter(|k| !(-4..=16).contains(k)) {
        let sign = if v < 0.0 { "-" } else { "" };
        return format!("{sign}2^{k}");
    }
    let decimal = format!("{v}");
    if decimal.len() <= 12 {
        decimal
    } else {
        format!("{v:e}")
    }
}

/// A list of codes in hex, consecutive ones merged into ranges (`0x79–0x7f`).
fn codes(list: &[u32], bits: u32) -> String {
    if list.is_empty() {
        return "—".to_string();
    }
    let digits = bits.div_ceil(4) as usize;
    let hex = |c: u32| format!("0x{c:0digits$x}");
    let mut parts = Vec::new();
    let mut i = 0;
    while i < list.len() {
        let mut j = i;
        while j + 1 < list.len() && list[j + 1] == list[j] + 1 {
            j += 1;
        }
        parts.push(match j - i {
            0 => hex(list[i]),
            1 => format!("{}, {}", hex(list[i]), hex(list[j])),
            _ => format!("{}–{}", hex(list[i]), hex(list[j])),
        });
        i = j + 1;
    }
    parts.join(", ")
}

/// `doc` with the text between [`START`] and [`END`] replaced by `table`.
pub fn splice(doc: &str, table: &str) -> Result<String, String> {
    let (Some(s), Some(e)) = (doc.find(START), doc.find(END)) else {
        return Err(format!("the markers {START} and {END} are missing"));
    };
    if e < s {
        return Err(format!("{END} comes before {START}"));
    }
    let head = &doc[..s + START.len()];
    let tail = &doc[e..];
    Ok(format!("{head}\n{table}{tail}"))
}

/// The generated section currently in `doc` (between the markers), if the markers are there.
pub fn current_section(doc: &str) -> Option<&str> {
    let s = doc.find(START)? + START.len();
    let e = doc.find(END)?;
    doc.get(s..e).map(|t| t.strip_prefix('\n').unwrap_or(t))
}
