//! Calibrators: observers fed batch after batch, then frozen into [`Scales`].

use std::borrow::Cow;
use std::fmt;

use lowbit_formats::{Conversion, Format};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::engine::{
    Plan, Scales, make_scales, min_max, par_amax, par_min_max, simd_amax, tiles_compact,
};
use crate::error::{QuantError, Result};
use crate::scale::{
    Param, affine_from_minmax, effective, nvfp4_tensor_scale, po2_exponent, scale_from_amax,
};
use crate::spec::{Po2Rounding, QuantSpec, ScaleKind, ScaleMode, pow2};

/// How a calibrator turns the batches it saw into a clipping value per group.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum Method {
    /// The running maximum of `|x|`.
    Max,
    /// The running minimum and maximum (for asymmetric specs; symmetric specs use
    /// `max(|min|, |max|)`).
    MinMax,
    /// Exponential moving average of each batch's min and max (PyTorch
    /// `MovingAverageMinMaxObserver`): `m ← m + c · (m_batch − m)`, the first batch sets `m`.
    MovingAverage {
        /// The averaging constant `c` in (0, 1].
        constant: f32,
    },
    /// The `percentile`-th percentile of `|x|` from a streaming histogram of `bins` bins.
    /// The estimate `e` of the exact nearest-rank percentile `v` satisfies
    /// `0 ≤ e − v ≤ 2·amax / bins` (see [`Calibrator`]).
    Percentile {
        /// In (0, 100].
        percentile: f64,
        /// Histogram bins (rounded up to a power of two).
        bins: usize,
    },
    /// The clipping value among `candidates` evenly spaced fractions of amax that minimises
    /// the fake-quant squared error over the histogram (bin centres weighted by counts).
    Mse {
        /// Histogram bins.
        bins: usize,
        /// Number of candidate clipping values `amax · j / candidates`, `j = 1..=candidates`.
        candidates: usize,
    },
    /// TensorRT's entropy calibration: the clipping bin `i ≥ start_bin` minimising
    /// `KL(P‖Q)` between the clipped histogram and its quantized version.
    Entropy {
        /// Histogram bins (TensorRT: 2048).
        bins: usize,
        /// First candidate bin (TensorRT: 128).
        start_bin: usize,
    },
}

impl Method {
    /// Percentile with 8192 bins.
    pub fn percentile(percentile: f64) -> Method {
        Method::Percentile {
            percentile,
            bins: 8192,
        }
    }
    /// MSE over 2048 bins and 128 candidates.
    pub fn mse() -> Method {
        Method::Mse {
            bins: 2048,
            candidates: 128,
        }
    }
    /// TensorRT entropy: 2048 bins, start bin 128.
    pub fn entropy() -> Method {
        Method::Entropy {
            bins: 2048,
            start_bin: 128,
        }
    }
    fn bins(&self) -> Option<usize> {
        match *self {
            Method::Percentile { bins, .. }
            | Method::Mse { bins, .. }
            | Method::Entropy { bins, .. } => Some(bins.max(2).next_power_of_two()),
            _ => None,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(out, "{self:?}")
    }
}

impl std::str::FromStr for Method {
    type Err = QuantError;

    /// `max`, `minmax`, `ema:C` (moving average with constant C in (0, 1]),
    /// `percentile:P` (P in (0, 100]), `mse`, `entropy` (or `kl`), with their default bins
    /// and candidates.
    ///
    /// ```
    /// use lowbit_quant::Method;
    /// assert_eq!("percentile:99.99".parse::<Method>()?, Method::percentile(99.99));
    /// assert!("percentile:101".parse::<Method>().is_err());
    /// # Ok::<(), lowbit_quant::QuantError>(())
    /// ```
    fn from_str(text: &str) -> Result<Method> {
        let bad = |reason: String| QuantError::InvalidSpec {
            field: "calibration method",
            reason,
        };
        let (name, arg) = match text.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (text.trim(), None),
        };
        let number = |lo_open: f64, hi: f64| -> Result<f64> {
            let a = arg.ok_or_else(|| bad(format!("`{name}` needs a value: `{name}:X`")))?;
            match a.parse::<f64>() {
                Ok(v) if v > lo_open && v <= hi => Ok(v),
                _ => Err(bad(format!(
                    "`{text}`: the value must be a number in ({lo_open}, {hi}]"
                ))),
            }
        };
        let no_arg = |m: Method| match arg {
            None => Ok(m),
            Some(_) => Err(bad(format!("`{name}` takes no value (`{text}`)"))),
        };
        match name {
            "max" => no_arg(Method::Max),
            "minmax" => no_arg(Method::MinMax),
            "ema" | "moving_average" => Ok(Method::MovingAverage {
                constant: number(0.0, 1.0)? as f32,
            }),
            "percentile" => Ok(Method::percentile(number(0.0, 100.0)?)),
            "mse" => no_arg(Method::mse()),
            "entropy" | "kl" => no_arg(Method::entropy()),
            _ => Err(bad(format!(
                "unknown method `{text}`; known: max, minmax, ema:C, percentile:P, mse, entropy"
            ))),
        }
    }
}

/// A histogram of `|x|` over `[0, range]`, `range` a power of two that doubles (merging bin
/// pairs exactly) when a larger value arrives: bounded memory, one O(n) pass per batch.
#[derive(Clone, Debug)]
struct Hist {
    range: f32,
    counts: Vec<u64>,
    pending_zeros: u64,
}

impl Hist {
    fn new(bins: usize) -> Hist {
        Hist {
            range: 0.0,
            counts: vec![0; bins],
            pending_zeros: 0,
        }
    }
    fn width(&self) -> f32 {
        self.range / self.counts.len() as f32
    }
    fn total(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.pending_zeros
    }
    fn grow_to(&mut self, a: f32) {
        if a == 0.0 || !a.is_finite() {
            return;
        }
        if self.range == 0.0 {
            let k = po2_exponent(a as f64, Po2Rounding::Ceil);
            self.range = pow2(k.max(-100));
            self.counts[0] += std::mem::take(&mut self.pending_zeros);
            return;
        }
        let nb = self.counts.len();
        while a > self.range {
            for i in 0..nb / 2 {
                self.counts[i] = self.counts[2 * i] + self.counts[2 * i + 1];
            }
            self.counts[nb / 2..].fill(0);
            self.range *= 2.0;
        }
    }
    /// Adds the values of `xs`, whose `max |x|` (NaN > inf > numbers, as
    /// [`crate::engine::amax`]) is `am`: one read of `xs` (a second only when it holds an
    /// infinity or a NaN, to find the largest finite value), threaded when `par`.
    fn add(&mut self, xs: &[f32], am: f32, par: bool) {
        let finite = am.is_finite();
        let a = if finite { am } else { finite_amax(xs) };
        self.grow_to(a);
        if self.range == 0.0 {
            self.pending_zeros += xs.iter().filter(|x| **x == 0.0).count() as u64;
            return;
        }
        let nb = self.counts.len();
        let k = nb as f32 / self.range; // a power of two: x · k is exact
        if par && xs.len() >= HIST_PAR_MIN {
            // u32 counters per rayon job (one job never sees 2^32 values), summed into u64.
            for big in xs.chunks(1 << 30) {
                let h = big
                    .par_chunks(HIST_CHUNK)
                    .fold(
                        || vec![0u32; nb],
                        |mut h, c| {
                            bin_into(c, k, finite, &mut h);
                            h
                        },
                    )
                    .reduce_with(|mut a, b| {
                        a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                        a
                    });
                if let Some(h) = h {
                    self.counts
                        .iter_mut()
                        .zip(&h)
                        .for_each(|(x, &y)| *x += y as u64);
                }
            }
        } else {
            let mut h = vec![0u32; nb];
            for c in xs.chunks(1 << 30) {
                bin_into(c, k, finite, &mut h);
                self.counts
                    .iter_mut()
                    .zip(h.iter_mut())
                    .for_each(|(x, y)| *x += std::mem::take(y) as u64);
            }
        }
    }
    /// Upper edge of the bin where the cumulative count reaches the nearest rank.
    fn percentile(&self, p: f64) -> f32 {
        let n = self.total();
        if n == 0 || self.range == 0.0 {
            return 0.0;
        }
        let rank = ((p / 100.0 * n as f64).ceil() as u64).clamp(1, n);
        let mut cum = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            cum += c;
            if cum >= rank {
                return (i + 1) as f32 * self.width();
            }
        }
        self.range
    }
}

/// Histogram inputs at least this long are binned by several threads.
const HIST_PAR_MIN: usize = 1 << 17;
/// Elements per parallel histogram job.
const HIST_CHUNK: usize = 1 << 16;
/// Groups at least this long are observed one at a time with threads inside the group.
const BIG_GROUP: usize = 1 << 17;

/// Counts `|x| · k` (exact: `k` is a power of two) into the bins `h` (the last bin takes
/// everything at or above the range). `finite`: `xs` holds no infinity or NaN (the caller
/// knows from its amax), so the per-element check is skipped.
fn bin_into(xs: &[f32], k: f32, finite: bool, h: &mut [u32]) {
    let last = h.len() - 1;
    if finite {
        // Bin indices a few hundred at a time (a loop that vectorizes), then the increments.
        let cap = last.min(u32::MAX as usize) as u32;
        let mut idx = [0u32; 256];
        for c in xs.chunks(256) {
            let idx = &mut idx[..c.len()];
            for (i, &x) in idx.iter_mut().zip(c) {
                *i = ((x.abs() * k) as u32).min(cap);
            }
            for &i in idx.iter() {
                h[i as usize] += 1;
            }
        }
    } else {
        for &x in xs {
            let a = x.abs();
            if a.is_finite() {
                h[((a * k) as usize).min(last)] += 1;
            }
        }
    }
}

fn finite_amax(xs: &[f32]) -> f32 {
    xs.iter().fold(
        0.0f32,
        |m, x| if x.is_finite() { m.max(x.abs()) } else { m },
    )
}

#[derive(Clone, Debug)]
struct Group {
    amax: f32,
    min: f32,
    max: f32,
    hist: Option<Hist>,
}

/// An observer for one spec and one method: feed it batches with
/// [`observe`](Self::observe), then [`freeze`](Self::freeze) it into scales.
///
/// Groups follow the spec's granularity, so every batch must give the same number of groups
/// (per-tensor and per-channel accept any batch size; per-block needs the same shape).
///
/// **Percentile error bound.** The histogram spans `[0, R]` with `R` the smallest power of two
/// ≥ the largest `|x|` seen (so `R < 2·amax`), in `B` equal bins; values are binned exactly
/// (`x · B/R` is a power-of-two rescale). The estimate is the upper edge of the bin holding the
/// nearest-rank percentile, so `0 ≤ estimate − exact ≤ R/B < 2·amax/B` (and the estimate is
/// capped at amax). Memory is `B` counters per group whatever the number of batches.
///
/// ```
/// use lowbit_quant::{Calibrator, Method, QuantSpec};
/// let spec: QuantSpec = "fp8_e4m3".parse()?;
/// let mut cal = Calibrator::new(spec, Method::Max);
/// cal.observe(&[1.0, -3.0], &[2])?;
/// cal.observe(&[448.0, 2.0], &[2])?;
/// let frozen = cal.freeze()?;
/// assert_eq!(frozen.scales.values, [1.0]); // 448 / 448
/// # Ok::<(), lowbit_quant::QuantError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Calibrator {
    spec: QuantSpec,
    method: Method,
    po2: Option<Po2Rounding>,
    groups: Vec<Group>,
    plan: Option<Plan>,
    batches: usize,
}

/// A spec (set to static) with its frozen scales; serializes to JSON as one object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Frozen {
    /// The spec, with [`ScaleMode::Static`].
    pub spec: QuantSpec,
    /// The scales.
    pub scales: Scales,
}

impl Frozen {
    /// Fake-quantizes with the frozen scales.
    pub fn fake_quantize(&self, src: &[f32], shape: &[usize], dst: &mut [f32]) -> Result<()> {
        self.spec
            .fake_quantize_with_scales(src, shape, &self.scales, dst)
    }
    /// JSON text.
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }
    /// Reads JSON text (validates the spec).
    pub fn from_json(s: &str) -> Result<Frozen> {
        Ok(serde_json::from_str(s)?)
    }
}

impl Calibrator {
    /// A calibrator for `spec` using `method`.
    pub fn new(spec: QuantSpec, method: Method) -> Calibrator {
        Calibrator {
            spec,
            method,
            po2: None,
            groups: Vec::new(),
            plan: None,
            batches: 0,
        }
    }

    /// Rounds the frozen f32 scales to powers of two (no effect on spec scale kinds that are
    /// already powers of two).
    pub fn with_power_of_two(mut self, rounding: Po2Rounding) -> Calibrator {
        self.po2 = Some(rounding);
        self
    }

    /// Batches seen so far.
    pub fn batches(&self) -> usize {
        self.batches
    }

    fn unsupported(&self, reason: &str) -> QuantError {
        QuantError::UnsupportedCalibration {
            method: self.method.to_string(),
            spec: self.spec.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Feeds one batch (a tensor of `shape`).
    pub fn observe(&mut self, src: &[f32], shape: &[usize]) -> Result<()> {
        let hist_method = self.method.bins().is_some();
        if hist_method && self.spec.is_asymmetric() {
            return Err(self.unsupported("histogram methods calibrate |x| for symmetric specs; use max, min-max or moving average"));
        }
        if hist_method && matches!(self.spec.scale(), ScaleKind::Nvfp4 { .. }) {
            return Err(
                self.unsupported("nvfp4 two-level scales calibrate with max or moving average")
            );
        }
        if let Method::MovingAverage { constant } = self.method
            && !(constant > 0.0 && constant <= 1.0)
        {
            return Err(self.unsupported("the moving-average constant must be in (0, 1]"));
        }
        let plan = Plan::new(&self.spec, shape)?;
        if src.len() != plan.n {
            return Err(QuantError::LengthMismatch {
                op: "Calibrator::observe",
                what: "src (product of shape)",
                expected: plan.n,
                got: src.len(),
            });
        }
        if self.groups.is_empty() {
            let hist = self.method.bins().map(Hist::new);
            self.groups = vec![
                Group {
                    amax: 0.0,
                    min: 0.0,
                    max: 0.0,
                    hist
                };
                plan.n_groups
            ];
        } else if self.groups.len() != plan.n_groups {
            return Err(QuantError::Calibration {
                reason: format!(
                    "batch of shape {shape:?} has {} groups, earlier batches had {}",
                    plan.n_groups,
                    self.groups.len()
                ),
            });
        }
        // Tiles: each tile's own elements only (not the zeros of the padded work layout, which
        // a histogram would count).
        let (work, ranges): (Cow<'_, [f32]>, Vec<(usize, usize)>) = if let Some(g) = plan.tiles() {
            let (work, ranges) = tiles_compact(g, src);
            (Cow::Owned(work), ranges)
        } else if plan.per_tensor {
            (plan.to_work(src), vec![(0, plan.n)])
        } else {
            let work = plan.to_work(src);
            let nb = plan.blocks_per_row();
            let ranges = (0..plan.n_groups)
                .map(|g| {
                    let (r, j) = (g / nb, g % nb);
                    let start = r * plan.row_len + j * plan.block;
                    (start, (start + plan.block).min((r + 1) * plan.row_len))
                })
                .collect();
            (work, ranges)
        };
        let first = self.batches == 0;
        let method = self.method;
        // min/max feed only the min-max rules (and asymmetric specs); amax feeds all.
        let need_minmax = matches!(method, Method::MinMax | Method::MovingAverage { .. })
            || self.spec.is_asymmetric();
        let update = |g: &mut Group, xs: &[f32], par: bool| {
            let am = if par { par_amax(xs) } else { simd_amax(xs) };
            let (lo, hi) = match (need_minmax, par) {
                (false, _) => (0.0, 0.0),
                (true, true) => par_min_max(xs),
                (true, false) => min_max(xs),
            };
            match method {
                Method::MovingAverage { constant } if !first => {
                    g.min += constant * (lo - g.min);
                    g.max += constant * (hi - g.max);
                    g.amax += constant * (am - g.amax);
                }
                _ if first => {
                    (g.min, g.max, g.amax) = (lo, hi, am);
                }
                _ => {
                    g.min = if lo.is_nan() || g.min.is_nan() {
                        f32::NAN
                    } else {
                        g.min.min(lo)
                    };
                    g.max = if hi.is_nan() || g.max.is_nan() {
                        f32::NAN
                    } else {
                        g.max.max(hi)
                    };
                    g.amax = f32::from_bits(g.amax.to_bits().max(am.to_bits()));
                }
            }
            if let Some(h) = g.hist.as_mut() {
                h.add(xs, am, par);
            }
        };
        let group_len = if plan.per_tensor { plan.n } else { plan.block };
        if group_len >= BIG_GROUP {
            for (g, &(a, b)) in self.groups.iter_mut().zip(&ranges) {
                update(g, &work[a..b], true);
            }
        } else {
            self.groups
                .par_iter_mut()
                .zip(ranges.par_iter())
                .for_each(|(g, &(a, b))| update(g, &work[a..b], false));
        }
        self.plan = Some(plan);
        self.batches += 1;
        Ok(())
    }

    /// The clipping value of each group (work order), from the method.
    fn clip_values(&self) -> Vec<f32> {
        let spec = self.spec;
        let method = self.method;
        self.groups
            .par_iter()
            .map(|g| match (method, g.hist.as_ref()) {
                (Method::Percentile { percentile, .. }, Some(h)) => {
                    h.percentile(percentile).min(g.amax)
                }
                (Method::Mse { candidates, .. }, Some(h)) => mse_clip(&spec, h, g.amax, candidates),
                (Method::Entropy { start_bin, .. }, Some(h)) => {
                    entropy_clip(&spec, h, start_bin).min(g.amax)
                }
                (Method::MinMax | Method::MovingAverage { .. }, _) => g
                    .min
                    .abs()
                    .max(g.max.abs())
                    .max(if g.min.is_nan() || g.max.is_nan() {
                        f32::NAN
                    } else {
                        0.0
                    }),
                _ => g.amax,
            })
            .collect()
    }

    /// Freezes the statistics into scales (and the spec, set to static).
    pub fn freeze(&self) -> Result<Frozen> {
        let Some(plan) = self.plan.as_ref() else {
            return Err(QuantError::Calibration {
                reason: "no batch was observed".into(),
            });
        };
        let spec = self.spec;
        let clips = self.clip_values();
        let ts = match spec.scale() {
            ScaleKind::Nvfp4 { .. } => nvfp4_tensor_scale(
                &spec,
                clips.iter().fold(0.0f32, |m, &c| {
                    if c.is_nan() || m.is_nan() {
                        f32::NAN
                    } else {
                        m.max(c)
                    }
                }),
            ),
            _ => 1.0,
        };
        let params: Vec<Param> = self
            .groups
            .iter()
            .zip(&clips)
            .map(|(g, &clip)| {
                let mut p = if spec.is_asymmetric() {
                    affine_from_minmax(&spec, g.min, g.max)
                } else {
                    Param {
                        scale: scale_from_amax(&spec, clip, ts),
                        zero: 0.0,
                    }
                };
                if let (Some(r), ScaleKind::F32) = (self.po2, spec.scale())
                    && p.scale.is_finite()
                    && p.scale > 0.0
                {
                    p.scale = pow2(po2_exponent(p.scale as f64, r).clamp(-149, 127));
                }
                p
            })
            .collect();
        let frozen_spec = spec.to_builder().mode(ScaleMode::Static).build()?;
        Ok(Frozen {
            spec: frozen_spec,
            scales: make_scales(&spec, plan, &params, ts),
        })
    }
}

/// Squared fake-quant error of the histogram (bin centres) under clipping value `clip`.
fn hist_error(spec: &QuantSpec, h: &Hist, clip: f32) -> f64 {
    let s = effective(spec, scale_from_amax(spec, clip, 1.0), 1.0);
    let inv = 1.0 / s;
    let format: Format = spec.format();
    let w = h.width();
    let mut err = 0.0f64;
    for (i, &c) in h.counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let x = (i as f32 + 0.5) * w;
        let q = format.quantize_with(x * inv, Conversion::SATURATE, 0) * s;
        let d = (x - q) as f64;
        err += c as f64 * d * d;
    }
    err
}

fn mse_clip(spec: &QuantSpec, h: &Hist, amax: f32, candidates: usize) -> f32 {
    if !(amax.is_finite() && amax > 0.0) {
        return amax;
    }
    let n = candidates.max(1);
    let mut best = (f64::INFINITY, amax);
    for j in 1..=n {
        let clip = amax * j as f32 / n as f32;
        let e = hist_error(spec, h, clip);
        if e < best.0 {
            best = (e, clip);
        }
    }
    best.1
}

/// TensorRT entropy calibration on the `|x|` histogram.
fn entropy_clip(spec: &QuantSpec, h: &Hist, start_bin: usize) -> f32 {
    let nb = h.counts.len();
    if h.range == 0.0 {
        return 0.0;
    }
    // Quantization levels on the non-negative side.
    let levels = match spec.format() {
        Format::Int(i) => i.max_value() as usize + 1,
        f => f.values().iter().filter(|v| **v >= 0.0).count(),
    }
    .max(2);
    let hist: Vec<f64> = h.counts.iter().map(|&c| c as f64).collect();
    let mut best = (f64::INFINITY, nb);
    for i in start_bin.max(levels).min(nb)..=nb {
        let mut p: Vec<f64> = hist[..i].to_vec();
        p[i - 1] += hist[i..].iter().sum::<f64>();
        // Q: merge the i kept bins into `levels` groups, spread each group's mass over its
        // non-empty bins.
        let mut q = vec![0.0f64; i];
        let per = i as f64 / levels as f64;
        for l in 0..levels {
            let a = (l as f64 * per).floor() as usize;
            let b = if l + 1 == levels {
                i
            } else {
                ((l + 1) as f64 * per).floor() as usize
            };
            let seg = &hist[a..b];
            let total: f64 = seg.iter().sum();
            let nonzero = seg.iter().filter(|&&c| c > 0.0).count();
            if nonzero > 0 {
                for k in a..b {
                    if hist[k] > 0.0 {
                        q[k] = total / nonzero as f64;
                    }
                }
            }
        }
        let ps: f64 = p.iter().sum();
        let qs: f64 = q.iter().sum();
        if ps == 0.0 || qs == 0.0 {
            continue;
        }
        let eps = 1e-12;
        let kl: f64 = p
            .iter()
            .zip(&q)
            .filter(|(p, _)| **p > 0.0)
            .map(|(p, q)| {
                let (pn, qn) = (p / ps, (q / qs).max(eps));
                pn * (pn / qn).ln()
            })
            .sum();
        if kl < best.0 {
            best = (kl, i);
        }
    }
    best.1 as f32 * h.width()
}
