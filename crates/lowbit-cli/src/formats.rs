//! `lowbit formats`: the facts of any formats, their value tables, and what given numbers
//! become in them.

use std::fmt::Write as _;

use lowbit_formats::{Conversion, Format, Overflow, Rounding};

use crate::error::{CliError, Result};

/// Number printing: plain between 10^-4 and 10^7 (and 0, inf, NaN), `e` notation outside (so
/// e8m0's 2^127 does not print as 39 digits).
fn num(v: f32) -> String {
    if (1.0e-4..1.0e7).contains(&v.abs()) || v == 0.0 || !v.is_finite() {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

/// The code in binary, split into its fields: `sign.exponent.mantissa` for minifloats
/// (`0.1001.010`), the two's-complement or unsigned bits for integers.
fn fields(f: &Format, code: u32) -> String {
    let bin = |v: u32, n: u32| {
        (0..n)
            .rev()
            .map(|i| if v >> i & 1 == 1 { '1' } else { '0' })
            .collect::<String>()
    };
    match f.as_minifloat() {
        Some(m) => {
            let (e, mb) = (m.exp_bits(), m.man_bits());
            let mut parts = Vec::new();
            if m.is_signed() {
                parts.push(bin(code >> (e + mb), 1));
            }
            parts.push(bin(code >> mb, e));
            if mb > 0 {
                parts.push(bin(code, mb));
            }
            parts.join(".")
        }
        None => bin(code, f.bits()),
    }
}

fn parse(names: &[String]) -> Result<Vec<Format>> {
    if names.is_empty() {
        return Ok(Format::named().collect());
    }
    names
        .iter()
        .map(|n| {
            n.parse::<Format>()
                .map_err(|e| CliError::Usage(e.to_string()))
        })
        .collect()
}

/// The table for `names` (the named formats when empty); with `values`, each format's sorted
/// finite values; with `cast`, what each number becomes (code and value) under the reference
/// conversion (ml_dtypes' `astype`) and under saturation (what quantizers use).
pub fn formats(names: &[String], values: bool, cast: &[f32]) -> Result<String> {
    let formats = parse(names)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:14} {:>4} {:>6} {:>4} {:>4} {:>5} {:>12} {:>12} {:>12} {:>7} {:>7}",
        "format",
        "bits",
        "signed",
        "exp",
        "man",
        "bias",
        "max",
        "min normal",
        "min subnorm",
        "values",
        "inf/nan"
    );
    let opt = |x: Option<f32>| x.map_or("-".to_string(), |v| format!("{v:e}"));
    for f in &formats {
        let x = f.facts();
        let _ = writeln!(
            out,
            "{:14} {:>4} {:>6} {:>4} {:>4} {:>5} {:>12} {:>12} {:>12} {:>7} {:>3}/{:<3}",
            x.name,
            x.bits,
            x.signed,
            x.exp_bits.map_or("-".into(), |v| v.to_string()),
            x.man_bits.map_or("-".into(), |v| v.to_string()),
            x.bias.map_or("-".into(), |v| v.to_string()),
            num(x.max),
            opt(x.min_normal),
            opt(x.min_subnormal),
            x.finite_values,
            x.inf_codes.len(),
            x.nan_codes.len()
        );
    }
    if values {
        for f in &formats {
            let vals: Vec<String> = f.values().into_iter().map(|v| format!("{v}")).collect();
            let _ = writeln!(
                out,
                "\n{f} ({} finite values):\n{}",
                vals.len(),
                vals.join(" ")
            );
        }
    }
    if !cast.is_empty() {
        let sat = Conversion::new(Rounding::NearestEven, Overflow::Saturate);
        let digits = formats
            .iter()
            .map(|f| f.bits().div_ceil(4))
            .max()
            .unwrap_or(2) as usize;
        let fw = formats
            .iter()
            .map(|f| f.bits() as usize + 2)
            .max()
            .unwrap_or(8);
        let _ = writeln!(
            out,
            "\n{:14} {:>14}  {:>w$} {:>fw$} {:>14}  {:>w$} {:>14}",
            "format",
            "input",
            "code",
            "fields",
            "value",
            "code",
            "saturated",
            w = digits + 2,
        );
        for f in &formats {
            for &x in cast {
                let code = f.encode(x);
                let s = f.encode_with(x, sat, 0);
                let _ = writeln!(
                    out,
                    "{:14} {:>14}  {:>#w$x} {:>fw$} {:>14}  {:>#w$x} {:>14}",
                    f.to_string(),
                    num(x),
                    code,
                    fields(f, code),
                    num(f.decode(code)),
                    s,
                    num(f.decode(s)),
                    w = digits + 2,
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_table_prints_e8m0_max_as_a_power() {
        let t = formats(&[], false, &[]).unwrap_or_default();
        assert!(t.contains("1.7014118e38"), "{t}");
        assert!(
            t.lines()
                .any(|l| l.starts_with("e4m3fn") && l.contains(" 448 ")),
            "{t}"
        );
    }

    #[test]
    fn values_and_casts_follow_the_reference() {
        let names = vec!["e2m1".to_string(), "e4m3fn".to_string()];
        let t = formats(&names, true, &[5.0, 500.0]).unwrap_or_default();
        assert!(
            t.contains("e2m1 (15 finite values):\n-6 -4 -3 -2 -1.5 -1 -0.5 0 0.5 1 1.5 2 3 4 6"),
            "{t}"
        );
        // e2m1: 5 is a tie between 4 (1.0·2^2) and 6 (1.5·2^2) → 4, the even mantissa;
        // e4m3fn: 500 overflows to NaN (ml_dtypes), saturates to 448.
        let row = |p: &str| {
            t.lines()
                .find(|l| l.starts_with(p))
                .unwrap_or_default()
                .to_string()
        };
        let r = row("e2m1                        5");
        assert!(
            r.split_whitespace()
                .eq(["e2m1", "5", "0x6", "0.11.0", "4", "0x6", "4"]),
            "{r}"
        );
        let r = row("e4m3fn                    500");
        assert!(
            r.split_whitespace()
                .eq(["e4m3fn", "500", "0x7f", "0.1111.111", "NaN", "0x7e", "448"]),
            "{r}"
        );
    }

    #[test]
    fn a_bad_name_is_a_usage_error() {
        match formats(&["e9m9".to_string()], false, &[]) {
            Err(CliError::Usage(m)) => assert!(m.contains("e9m9"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
