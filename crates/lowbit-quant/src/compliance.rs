//! Compliance primitives: are these values really on the format's grid under these scales, and
//! do the scales obey their own constraint? Judged by the independent value tables of
//! lowbit-formats, never by the quantization kernel.

use lowbit_formats::Format;
use serde::Serialize;

use crate::engine::{Plan, Scales};
use crate::error::{QuantError, Result};
use crate::spec::{QuantSpec, ScaleKind};

/// What [`check_compliance`] found. Indices are capped at the first 1000 of each kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ComplianceReport {
    /// Elements checked.
    pub elements: usize,
    /// Elements whose value is not `t · s` (or `(t − z) · s`) for a representable `t`.
    pub off_grid: usize,
    /// Their flat indices (first 1000).
    pub off_grid_indices: Vec<usize>,
    /// Scales checked (the tensor scale counts as one).
    pub scales: usize,
    /// Scales that break their constraint.
    pub bad_scales: usize,
    /// Their indices in the scale layout (first 1000; the tensor scale is `usize::MAX`).
    pub bad_scale_indices: Vec<usize>,
}

impl ComplianceReport {
    /// No violation of either kind.
    pub fn is_compliant(&self) -> bool {
        self.off_grid == 0 && self.bad_scales == 0
    }
}

const CAP: usize = 1000;

fn is_pow2(s: f32) -> bool {
    s > 0.0 && s.is_finite() && {
        let b = s.to_bits();
        if b >> 23 == 0 {
            b.is_power_of_two()
        } else {
            b & 0x007F_FFFF == 0
        }
    }
}

/// Whether a stored scale obeys its kind's constraint: f32 finite and positive; power of two;
/// E8M0 a power of two in `[2^−127, 2^127]` or NaN; NVFP4 block scales and E4M3 scales positive
/// E4M3 values.
pub fn scale_is_valid(kind: ScaleKind, s: f32) -> bool {
    match kind {
        ScaleKind::F32 => s.is_finite() && s > 0.0,
        ScaleKind::PowerOfTwo { .. } => is_pow2(s),
        ScaleKind::E8M0 { .. } => {
            s.is_nan() || (is_pow2(s) && (-127..=127).contains(&crate::spec::exponent_of(s)))
        }
        ScaleKind::Nvfp4 { .. } | ScaleKind::E4M3 { .. } => s > 0.0 && e4m3_table().contains(s),
    }
}

/// The E4M3 (FN) value table, built once (NVFP4 block scales are checked against it, one
/// lookup per block).
fn e4m3_table() -> &'static lowbit_formats::ValueTable {
    static TABLE: std::sync::OnceLock<lowbit_formats::ValueTable> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| Format::E4M3FN.value_table())
}

/// Checks `values` (a dequantized tensor of `shape`) against `scales` under `spec`.
///
/// An element `v` of a group with effective scale `s` (and zero point `z`) is on the grid when
/// some representable value `t` of the element format satisfies `t · s == v` exactly (for
/// integers under E8M0, `t` runs over the MXINT grid `code · 2^−(bits−2)`); the candidates are
/// the two table neighbours of `v / s`. Groups whose scale is NaN (MX blocks holding inf/NaN)
/// must hold NaN only.
pub fn check_compliance(
    spec: &QuantSpec,
    values: &[f32],
    shape: &[usize],
    scales: &Scales,
) -> Result<ComplianceReport> {
    let plan = Plan::new(spec, shape)?;
    if values.len() != plan.n {
        return Err(QuantError::LengthMismatch {
            op: "check_compliance",
            what: "values",
            expected: plan.n,
            got: values.len(),
        });
    }
    if scales.shape != plan.scale_shape || scales.values.len() != plan.n_groups {
        return Err(QuantError::ScaleShape {
            op: "check_compliance",
            expected: plan.scale_shape,
            got: scales.shape.clone(),
        });
    }
    let mut rep = ComplianceReport {
        elements: plan.n,
        scales: scales.values.len(),
        ..Default::default()
    };
    let kind = spec.scale();
    for (i, &s) in scales.values.iter().enumerate() {
        if !scale_is_valid(kind, s) {
            rep.bad_scales += 1;
            if rep.bad_scale_indices.len() < CAP {
                rep.bad_scale_indices.push(i);
            }
        }
    }
    if let Some(t) = scales.tensor_scale {
        rep.scales += 1;
        if !(t.is_finite() && t > 0.0) {
            rep.bad_scales += 1;
            rep.bad_scale_indices.push(usize::MAX);
        }
    }
    let unit = spec.element_unit();
    let table = spec.format().value_table();
    // Group index of every element, in tensor order.
    let group_of = group_index(&plan);
    let ts = scales.tensor_scale.unwrap_or(1.0);
    // Quantized tensors repeat few values (at most 2^bits per scale, and block scales take few
    // distinct values): remember the (value, scale, zero point) triples already found on the
    // grid in a small direct-mapped table. A hit skips the search; the verdict is the search's.
    const MEMO: usize = 4096;
    let mut memo = vec![(u32::MAX, u32::MAX, u32::MAX); MEMO];
    for (idx, &v) in values.iter().enumerate() {
        let g = group_of(idx);
        let stored = scales.values[g];
        let zero = scales.zero_points.as_ref().map_or(0.0, |z| z[g]);
        let ok = if stored.is_nan() {
            v.is_nan()
        } else {
            let s = match kind {
                ScaleKind::Nvfp4 { .. } => ts * stored,
                _ => stored * unit,
            };
            let id = (v.to_bits(), s.to_bits(), zero.to_bits());
            let h = (u64::from(id.0) ^ (u64::from(id.1) << 32) ^ u64::from(id.2).rotate_left(17))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let key = (h >> 52) as usize; // the top 12 bits: MEMO = 2^12 slots
            if memo[key] == id {
                true
            } else {
                let ok = on_grid(&table, v, s, zero);
                if ok {
                    memo[key] = id;
                }
                ok
            }
        };
        if !ok {
            rep.off_grid += 1;
            if rep.off_grid_indices.len() < CAP {
                rep.off_grid_indices.push(idx);
            }
        }
    }
    Ok(rep)
}

fn on_grid(table: &lowbit_formats::ValueTable, v: f32, s: f32, zero: f32) -> bool {
    if !(v.is_finite() && s.is_finite() && s > 0.0) {
        return false;
    }
    let r = v / s + zero;
    let (lo, hi) = table.neighbours(r);
    [lo, hi].into_iter().flatten().any(|t| (t - zero) * s == v)
}

/// Maps a flat tensor index to its group index in the scale layout.
fn group_index(plan: &Plan) -> impl Fn(usize) -> usize + '_ {
    move |idx| {
        if plan.per_tensor {
            return 0;
        }
        if let Some(g) = plan.tiles() {
            let (mat, rest) = (idx / (g.m * g.n), idx % (g.m * g.n));
            return g.group_of(mat, rest / g.n, rest % g.n);
        }
        let (o, rest) = (idx / (plan.len * plan.inner), idx % (plan.len * plan.inner));
        let (a, i) = (rest / plan.inner, rest % plan.inner);
        if plan.per_channel {
            return a;
        }
        let nb = plan.blocks_per_row();
        (o * nb + a / plan.block) * plan.inner + i
    }
}
