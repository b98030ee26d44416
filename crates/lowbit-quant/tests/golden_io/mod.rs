//! Reading the golden files of `scripts/golden/` (lines of hex words under a one-letter tag)
//! and reporting bit mismatches against them, shared by the reference tests.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

/// Whitespace-separated 32-bit hex words.
pub fn hex32(s: &str) -> Vec<u32> {
    s.split_whitespace()
        .map(|w| u32::from_str_radix(w, 16).unwrap())
        .collect()
}

/// Whitespace-separated hex bytes.
pub fn hex_bytes(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|w| u8::from_str_radix(w, 16).unwrap())
        .collect()
}

/// Packed hex codes of `digits` digits each (`"0a1f"` with 2 digits: 0x0a, 0x1f).
pub fn packed_codes(s: &str, digits: usize) -> Vec<u8> {
    (0..s.len() / digits)
        .map(|i| u8::from_str_radix(&s[digits * i..digits * (i + 1)], 16).unwrap())
        .collect()
}

/// The next `rows` lines, each starting with `tag` (stripped).
pub fn take<'a>(lines: &mut impl Iterator<Item = &'a str>, tag: &str, rows: usize) -> Vec<&'a str> {
    (0..rows)
        .map(|_| {
            let l = lines.next().unwrap();
            l.strip_prefix(tag)
                .unwrap_or_else(|| panic!("expected `{tag}`: {l}"))
                .trim()
        })
        .collect()
}

/// Mismatches of `got` against the reference's f32 bit patterns `want` (with `any_nan`, a
/// NaN equals any NaN), one line each, naming `what`, the element and its input `x`.
pub fn value_mismatches(
    what: &str,
    x: &[f32],
    got: &[f32],
    want: &[u32],
    any_nan: bool,
) -> Vec<String> {
    let nan_pair = |g: f32, w: u32| any_nan && g.is_nan() && f32::from_bits(w).is_nan();
    got.iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| g.to_bits() != **w && !nan_pair(**g, **w))
        .map(|(i, (g, w))| {
            format!(
                "{what}: element {i} ({:e}): fake-quant {g:e}, reference {:e}",
                x[i],
                f32::from_bits(*w)
            )
        })
        .collect()
}

/// Fails with the first 40 mismatches, if any.
pub fn assert_no_mismatches(mismatches: &[String]) {
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(40)].join("\n")
    );
}
