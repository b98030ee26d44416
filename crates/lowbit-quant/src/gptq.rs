//! GPTQ (Frantar et al., 2023): quantizes a linear layer's weight column by column, moving
//! each column's rounding error onto the columns not yet quantized through the inverse Hessian
//! of the layer's inputs, so that `‖X Wᵀ − X Qᵀ‖²` stays small rather than `‖W − Q‖²`.
//!
//! For a weight `W` of `rows × cols` (output × input channels) and `H = Σ x xᵀ` over the
//! calibration inputs `x` (`cols × cols`), this follows the reference `fasterquant`
//! (IST-DASLab `gptq.py`) without its lazy batching, which changes only the order of
//! operations: dead inputs (`H_ii = 0`) get `H_ii = 1` and zero weights; `H += damp ·
//! mean(diag H) · I`; `U = cholesky_upper(H⁻¹)`; then for each column `i` in order, every row's
//! `q = Q(w_i)` with the row's group scale, `e = (w_i − q) / U_ii`, and `w_j −= e · U_ij` for
//! `j > i`. Group scales come from the weights as they are when the group's first column is
//! reached (per output channel or per tensor: from the original weight, the reference's
//! `find_params(W)` before the loop), or with `static_groups` all from the weight before the
//! loop; `act_order` takes the columns in decreasing order of `H_ii`. Linear algebra in `f64`;
//! each element is quantized exactly as [`QuantSpec::fake_quantize`] quantizes it, so with a
//! diagonal `H` the result equals round-to-nearest bit for bit.
//!
//! Granularities: per tensor, per output channel (`per_channel` on axis 0, or `whole_axis` on
//! axis 1) and blocks along the input axis (`per_block` on axis 1), with any scale kind (NVFP4's
//! tensor scale from the whole weight) and asymmetric integer specs.

use rayon::prelude::*;

use crate::engine::{Scales, affine_fake_block, divides, fake_block, fake_block_div};
use crate::error::{QuantError, Result};
use crate::layout::resolve_axis;
use crate::scale::{Param, affine_from_minmax, effective, nvfp4_tensor_scale, scale_from_amax};
use crate::spec::{Granularity, QuantSpec, ScaleKind};
use lowbit_formats::Codec;

/// GPTQ's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GptqOptions {
    /// Dampening added to the Hessian's diagonal, as a fraction of its mean (the reference's
    /// `percdamp`, 0.01).
    pub damp: f64,
    /// The reference's lazy-batch width (`blocksize`, 128). It does not change the arithmetic
    /// but it does change which weights a group's scale sees: the reference computes a group's
    /// scale from the weight as it stood at the start of the current batch of columns, without
    /// the updates from that batch's earlier columns. This is reproduced.
    pub block: usize,
    /// The reference's `actorder`: quantize the columns in decreasing order of `H_ii` (the
    /// inputs' energy), so that the most important ones are rounded while there is most room
    /// to compensate. With blocks of columns it needs `static_groups` (groups of permuted
    /// columns would not be blocks of the weight). Stochastic rounding then numbers the
    /// elements in that order.
    pub act_order: bool,
    /// The reference's `static_groups`: every block's scale is found before any column is
    /// quantized, from the weight with dead inputs zeroed, instead of at the block's first
    /// column from the weight as the lazy batches have updated it. In act order a column keeps
    /// its own block's scale, so the scales stay blocks of the weight (the layout exllama-style
    /// kernels take). No effect with per-tensor or per-output-channel scales.
    pub static_groups: bool,
}

impl Default for GptqOptions {
    fn default() -> Self {
        GptqOptions {
            damp: 0.01,
            block: 128,
            act_order: false,
            static_groups: false,
        }
    }
}

/// A GPTQ-quantized weight: the fake-quantized values (`rows × cols`, row-major) and the
/// scales they lie on, in the spec's layout for a `[rows, cols]` tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct GptqWeight {
    /// The quantized weight, each element `Q(w)` on its group's grid.
    pub values: Vec<f32>,
    /// The group scales used (and zero points, and NVFP4's tensor scale).
    pub scales: Scales,
}

/// How the weight's groups run.
#[derive(Clone, Copy)]
enum Groups {
    /// One scale for everything.
    Tensor,
    /// One per row.
    Row,
    /// Runs of `size` columns within each row.
    Block(usize),
}

/// The accumulated `H = Σ x xᵀ` of a layer's inputs (`cols × cols`, `f64`), fed batch by batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Hessian {
    cols: usize,
    h: Vec<f64>,
    samples: u64,
}

impl Hessian {
    /// An empty accumulator for inputs of width `cols`.
    pub fn new(cols: usize) -> Hessian {
        Hessian {
            cols,
            h: vec![0.0; cols * cols],
            samples: 0,
        }
    }

    /// Adds `x`, rows of `cols` values (any number of rows). Errors when the length is not a
    /// multiple of `cols`.
    pub fn add(&mut self, x: &[f32]) -> Result<()> {
        let c = self.cols;
        if c == 0 || !x.len().is_multiple_of(c) {
            return Err(QuantError::LengthMismatch {
                op: "Hessian::add",
                what: "inputs (a multiple of the width)",
                expected: c,
                got: x.len(),
            });
        }
        let rows: Vec<Vec<f64>> = x
            .chunks(c)
            .map(|r| r.iter().map(|&v| f64::from(v)).collect())
            .collect();
        self.h.par_chunks_mut(c).enumerate().for_each(|(i, hi)| {
            for r in &rows {
                let ri = r[i];
                if ri != 0.0 {
                    for (h, &rj) in hi.iter_mut().zip(r) {
                        *h += ri * rj;
                    }
                }
            }
        });
        self.samples += rows.len() as u64;
        Ok(())
    }

    /// Input width.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Rows seen.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The matrix, row-major.
    pub fn matrix(&self) -> &[f64] {
        &self.h
    }

    /// The Hessian of the inputs with input `j` multiplied by `d[j]` (`H_ij · d_i · d_j`), as
    /// if they had been fed so: SmoothQuant's `x / s` is `d = 1 / s`. Errors when `d` is not
    /// as long as the inputs are wide or holds a value that is not finite.
    pub fn scale_inputs(&mut self, d: &[f64]) -> Result<()> {
        if d.len() != self.cols {
            return Err(QuantError::LengthMismatch {
                op: "Hessian::scale_inputs",
                what: "factors (one per input)",
                expected: self.cols,
                got: d.len(),
            });
        }
        if let Some((j, v)) = d.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(QuantError::Calibration {
                reason: format!("Hessian::scale_inputs: factor {j} is {v}; factors must be finite"),
            });
        }
        let c = self.cols;
        self.h.par_chunks_mut(c).zip(d).for_each(|(row, &di)| {
            for (h, &dj) in row.iter_mut().zip(d) {
                *h *= di * dj;
            }
        });
        Ok(())
    }
}

/// Quantizes the weight `w` (`rows × cols`, row-major) with GPTQ under `spec`, given the
/// inputs' `H` (see the module docs).
pub fn gptq(
    spec: &QuantSpec,
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &Hessian,
    options: GptqOptions,
) -> Result<GptqWeight> {
    let bad = |reason: String| unsupported(spec, reason);
    if w.len() != rows.saturating_mul(cols) || h.cols != cols {
        return Err(QuantError::LengthMismatch {
            op: "gptq",
            what: "weight (rows × cols) and Hessian (cols × cols)",
            expected: rows.saturating_mul(cols),
            got: w.len(),
        });
    }
    if !(options.damp.is_finite() && options.damp >= 0.0) {
        return Err(bad(format!("damp {} must be finite and ≥ 0", options.damp)));
    }
    if w.iter().any(|v| !v.is_finite()) {
        return Err(bad("the weight holds inf or NaN".into()));
    }
    let shape = [rows, cols];
    let groups = match spec.granularity() {
        Granularity::PerTensor => Groups::Tensor,
        Granularity::PerChannel { axis } if resolve_axis(axis, &shape)? == 0 => Groups::Row,
        Granularity::WholeAxis { axis } if resolve_axis(axis, &shape)? == 1 => Groups::Row,
        Granularity::PerBlock { axis, size } if resolve_axis(axis, &shape)? == 1 => {
            Groups::Block(size.max(1))
        }
        g => {
            return Err(bad(format!(
                "GPTQ needs scales per tensor, per output channel or in blocks along the input \
                 axis; {g:?} groups otherwise"
            )));
        }
    };
    if options.act_order
        && let Groups::Block(_) = groups
        && !options.static_groups
    {
        return Err(bad(
            "act_order with blocks of columns needs static_groups: true (groups of \
             reordered columns are not blocks of the weight); per-tensor and \
             per-output-channel scales take it alone"
                .into(),
        ));
    }
    let problem = Problem {
        spec,
        w,
        rows,
        cols,
        h,
        options,
        groups,
    };
    if options.act_order {
        return act_order(problem);
    }
    quantize_columns(problem, None)
}

/// One GPTQ run's checked inputs: the weight (`rows × cols`), its inputs' Hessian, the settings
/// and the groups the spec makes.
#[derive(Clone, Copy)]
struct Problem<'a> {
    spec: &'a QuantSpec,
    w: &'a [f32],
    rows: usize,
    cols: usize,
    h: &'a Hessian,
    options: GptqOptions,
    groups: Groups,
}

/// GPTQ cannot run `spec` (or these settings), for `reason`.
fn unsupported(spec: &QuantSpec, reason: String) -> QuantError {
    QuantError::UnsupportedCalibration {
        method: "gptq".into(),
        spec: spec.to_string(),
        reason,
    }
}

/// GPTQ's column loop on the problem's `w` and `h`, whose column `k` is the weight's column
/// `order[k]` (`None`: the weight's own order). Static groups take their scales from the
/// weight in its own order.
fn quantize_columns(problem: Problem, order: Option<&[usize]>) -> Result<GptqWeight> {
    let Problem {
        spec,
        w,
        rows,
        cols,
        h,
        options,
        groups,
    } = problem;
    let bad = |reason: String| unsupported(spec, reason);
    let u = inverse_hessian_upper(h, options.damp).map_err(bad)?;
    let batch = options.block.max(1);
    let dead: Vec<bool> = (0..cols).map(|i| h.h[i * cols + i] == 0.0).collect();
    let codec = Codec::new(spec.format(), spec.conversion()).with_parallel(false);
    let amax_all = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    let ts = match spec.scale() {
        ScaleKind::Nvfp4 { .. } => nvfp4_tensor_scale(spec, amax_all),
        _ => 1.0,
    };
    let param_of = |vals: &[f32]| -> Param {
        if spec.is_asymmetric() {
            let (lo, hi) = vals
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                    (l.min(v), h.max(v))
                });
            affine_from_minmax(spec, lo, hi)
        } else {
            let a = vals.iter().fold(0f32, |m, v| m.max(v.abs()));
            Param {
                scale: scale_from_amax(spec, a, ts),
                zero: 0.0,
            }
        }
    };
    let tensor_param = param_of(w);
    let per_row_groups = match groups {
        Groups::Tensor | Groups::Row => 1,
        Groups::Block(size) => cols.div_ceil(size),
    };
    let mut out = vec![0f32; rows * cols];
    let mut params = vec![Param::default(); rows * per_row_groups];
    out.par_chunks_mut(cols)
        .zip(params.par_chunks_mut(per_row_groups))
        .zip(w.par_chunks(cols))
        .enumerate()
        .try_for_each(|(r, ((q_row, p_row), w_row))| -> Result<()> {
            let mut cur: Vec<f64> = w_row
                .iter()
                .zip(&dead)
                .map(|(&v, &d)| if d { 0.0 } else { f64::from(v) })
                .collect();
            // Per tensor and per row: from the original weight (dead inputs included), as the
            // reference's `find_params(W)` before the loop.
            let mut p = match groups {
                Groups::Row => param_of(w_row),
                _ => tensor_param,
            };
            // Static groups: every block's scale up front, from the weight with dead inputs
            // zeroed, in its own column order.
            if let Groups::Block(size) = groups
                && options.static_groups
            {
                let mut own = vec![0f32; cols];
                for (k, &v) in cur.iter().enumerate() {
                    own[order.map_or(k, |o| o[k])] = v as f32;
                }
                for (pj, block) in p_row.iter_mut().zip(own.chunks(size)) {
                    *pj = param_of(block);
                }
            }
            let mut snapshot: Vec<f32> = Vec::new();
            for i in 0..cols {
                if i % batch == 0 {
                    snapshot = cur.iter().map(|&v| v as f32).collect();
                }
                if let Groups::Block(size) = groups {
                    if options.static_groups {
                        p = p_row[order.map_or(i, |o| o[i]) / size];
                    } else if i % size == 0 {
                        let end = (i + size).min(cols);
                        p = param_of(&snapshot[i..end]);
                        p_row[i / size] = p;
                    }
                }
                let x = cur[i] as f32;
                let q = fake_one(&codec, spec, x, p, ts, (r * cols + i) as u64)?;
                q_row[i] = q;
                let d = u[i * cols + i];
                let e = (cur[i] - f64::from(q)) / d;
                let ui = &u[i * cols + i + 1..(i + 1) * cols];
                for (c, &uij) in cur[i + 1..].iter_mut().zip(ui) {
                    *c -= e * uij;
                }
            }
            if !matches!(groups, Groups::Block(_)) {
                p_row[0] = p;
            }
            Ok(())
        })?;
    let (shape, values, zeros): (Vec<usize>, Vec<f32>, Vec<f32>) = match groups {
        Groups::Tensor => (vec![1], vec![tensor_param.scale], vec![tensor_param.zero]),
        Groups::Row => (
            vec![rows],
            params.iter().map(|p| p.scale).collect(),
            params.iter().map(|p| p.zero).collect(),
        ),
        Groups::Block(_) => (
            vec![rows, per_row_groups],
            params.iter().map(|p| p.scale).collect(),
            params.iter().map(|p| p.zero).collect(),
        ),
    };
    let scales = Scales {
        shape: match (groups, spec.granularity()) {
            // Whole-axis scales keep the axis as 1.
            (Groups::Row, Granularity::WholeAxis { .. }) => vec![rows, 1],
            _ => shape,
        },
        values,
        zero_points: spec.is_asymmetric().then_some(zeros),
        tensor_scale: matches!(spec.scale(), ScaleKind::Nvfp4 { .. }).then_some(ts),
    };
    Ok(GptqWeight {
        values: out,
        scales,
    })
}

/// GPTQ with the columns in decreasing order of `H_ii` (dead inputs counted as 1, as the
/// reference sorts after setting them), then put back in place. Ties keep their order.
fn act_order(problem: Problem) -> Result<GptqWeight> {
    let Problem {
        w, rows, cols, h, ..
    } = problem;
    let diag = |i: usize| {
        let d = h.h[i * cols + i];
        if d == 0.0 { 1.0 } else { d }
    };
    let mut perm: Vec<usize> = (0..cols).collect();
    perm.sort_by(|&a, &b| diag(b).total_cmp(&diag(a)));
    let wp: Vec<f32> = (0..rows)
        .flat_map(|r| perm.iter().map(move |&c| w[r * cols + c]))
        .collect();
    let mut hp = Hessian::new(cols);
    for (i, &pi) in perm.iter().enumerate() {
        for (j, &pj) in perm.iter().enumerate() {
            hp.h[i * cols + j] = h.h[pi * cols + pj];
        }
    }
    hp.samples = h.samples;
    let permuted = Problem {
        w: &wp,
        h: &hp,
        ..problem
    };
    let g = quantize_columns(permuted, Some(&perm))?;
    let mut values = vec![0f32; rows * cols];
    for r in 0..rows {
        for (k, &c) in perm.iter().enumerate() {
            values[r * cols + c] = g.values[r * cols + k];
        }
    }
    // Per-tensor and per-row scales do not depend on the column order; static groups' are in
    // the weight's own order.
    Ok(GptqWeight {
        values,
        scales: g.scales,
    })
}

/// One element as the engine fake-quantizes it with group parameter `p`.
fn fake_one(codec: &Codec, spec: &QuantSpec, x: f32, p: Param, ts: f32, index: u64) -> Result<f32> {
    let mut out = [0f32];
    if spec.is_asymmetric() {
        affine_fake_block(spec, &[x], &mut out, p, index);
        return Ok(out[0]);
    }
    let eff = effective(spec, p.scale, ts);
    if divides(spec) {
        fake_block_div(codec, &[x], &mut out, eff, index)?;
    } else {
        fake_block(codec, &[x], &mut out, eff, index)?;
    }
    Ok(out[0])
}

/// `cholesky_upper((H + damp · mean(diag H) · I)⁻¹)` with dead inputs' diagonal set to 1, as
/// the reference computes it (row-major `cols × cols`, lower triangle zero).
fn inverse_hessian_upper(h: &Hessian, damp: f64) -> std::result::Result<Vec<f64>, String> {
    let n = h.cols;
    let mut a = h.h.clone();
    for i in 0..n {
        if a[i * n + i] == 0.0 {
            a[i * n + i] = 1.0;
        }
    }
    let mean = (0..n).map(|i| a[i * n + i]).sum::<f64>() / n.max(1) as f64;
    for i in 0..n {
        a[i * n + i] += damp * mean;
    }
    let l = cholesky_lower(&a, n).ok_or_else(|| {
        "the inputs' Hessian is not positive definite: raise damp, or calibrate on more samples"
            .to_string()
    })?;
    // H⁻¹ = L⁻ᵀ L⁻¹, from the triangular inverse.
    let li = lower_inverse(&l, n);
    let mut inv = vec![0f64; n * n];
    inv.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for (j, v) in row.iter_mut().enumerate() {
            // (L⁻ᵀ L⁻¹)_ij = Σ_k Li_ki Li_kj, k ≥ max(i, j).
            let mut s = 0.0;
            for k in i.max(j)..n {
                s += li[k * n + i] * li[k * n + j];
            }
            *v = s;
        }
    });
    let lo = cholesky_lower(&inv, n)
        .ok_or_else(|| "the inverse Hessian is not positive definite: raise damp".to_string())?;
    // Upper factor U = Lᵀ.
    let mut u = vec![0f64; n * n];
    for i in 0..n {
        for j in i..n {
            u[i * n + j] = lo[j * n + i];
        }
    }
    Ok(u)
}

/// The lower Cholesky factor of a symmetric positive-definite `n × n` matrix (`None` if it is
/// not positive definite).
fn cholesky_lower(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; n * n];
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= l[j * n + k] * l[j * n + k];
        }
        if d.is_nan() || d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        l[j * n + j] = d;
        let (head, tail) = l.split_at_mut((j + 1) * n);
        let lj = &head[j * n..j * n + j];
        tail.par_chunks_mut(n).enumerate().for_each(|(o, row)| {
            let i = j + 1 + o;
            let mut s = a[i * n + j];
            for (x, y) in row[..j].iter().zip(lj) {
                s -= x * y;
            }
            row[j] = s / d;
        });
    }
    Some(l)
}

/// The inverse of a lower-triangular `n × n` matrix with a positive diagonal.
fn lower_inverse(l: &[f64], n: usize) -> Vec<f64> {
    let mut inv = vec![0f64; n * n];
    // Column j of L⁻¹ solves L x = e_j by forward substitution; columns are independent.
    let cols: Vec<Vec<f64>> = (0..n)
        .into_par_iter()
        .map(|j| {
            let mut x = vec![0f64; n];
            for i in j..n {
                let mut s = if i == j { 1.0 } else { 0.0 };
                for k in j..i {
                    s -= l[i * n + k] * x[k];
                }
                x[i] = s / l[i * n + i];
            }
            x
        })
        .collect();
    for (j, c) in cols.iter().enumerate() {
        for i in j..n {
            inv[i * n + j] = c[i];
        }
    }
    inv
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn inverse_hessian_factor_is_right() {
        // H = A Aᵀ + I for a fixed A: Uᵀ U must equal (H + damp·mean·I)⁻¹.
        let n = 6;
        let a: Vec<f64> = (0..n * n)
            .map(|i| ((i * 7 % 11) as f64 - 5.0) / 3.0)
            .collect();
        let mut h = Hessian::new(n);
        for i in 0..n {
            for j in 0..n {
                let mut s = if i == j { 1.0 } else { 0.0 };
                for k in 0..n {
                    s += a[i * n + k] * a[j * n + k];
                }
                h.h[i * n + j] = s;
            }
        }
        let u = inverse_hessian_upper(&h, 0.0).unwrap();
        // (Uᵀ U) H = I.
        for i in 0..n {
            for j in 0..n {
                let mut s = 0.0;
                for k in 0..n {
                    let mut inv_ik = 0.0;
                    for m in 0..n {
                        inv_ik += u[m * n + i] * u[m * n + k];
                    }
                    s += inv_ik * h.h[k * n + j];
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((s - want).abs() < 1e-9, "({i}, {j}): {s}");
            }
        }
        // Not positive definite: an error, not a panic.
        let mut bad = Hessian::new(2);
        bad.h = vec![1.0, 2.0, 2.0, 1.0];
        assert!(inverse_hessian_upper(&bad, 0.0).is_err());
    }
}
