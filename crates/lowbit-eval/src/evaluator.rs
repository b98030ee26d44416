//! [`Evaluator`]: one FP32 reference model and N quantized variants, fed batch by batch.
//!
//! Per batch the reference runs once (in [`Mode::Fp32`], taps on) and every variant runs once
//! (in [`Mode::Quantize`], taps on): 1 + N forward passes for N configs. Each variant is its
//! own model instance, so variants share nothing mutable and run in parallel on the current
//! rayon pool; each variant sums its statistics in a fixed order, so results do not depend on
//! the thread count.
//!
//! The layer-wise part (taps, propagated and isolated errors, activation compliance) costs
//! several times a forward pass per variant. [`Evaluator::set_layer_batches`] limits it to the
//! first batches (the task metrics still cover every batch); each result says on how many
//! samples its layer statistics were taken.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use lowbit_nn::{LayerEntry, Mode, QuantModel, Quantizer, TapRecord};
use lowbit_quant::{QuantSpec, Scales, check_compliance};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::metrics::{TaskAccumulator, TaskMetrics};
use crate::stats::{ErrorAccumulator, ErrorStats};

/// One quantized model to evaluate against the reference.
pub struct Variant {
    /// Its name in reports (the config name, or `config@layer` in sensitivity runs).
    pub name: String,
    /// The model instance (built with the variant's config; not shared with other variants).
    pub model: Box<dyn QuantModel>,
    /// Whether to compute layer-wise comparison, compliance and compression (off for the
    /// one-layer-at-a-time variants of a sensitivity run, which only need task metrics).
    pub detail: bool,
}

impl std::fmt::Debug for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Variant")
            .field("name", &self.name)
            .field("detail", &self.detail)
            .finish_non_exhaustive()
    }
}

/// Compliance counts of one tensor role, summed over batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoleCompliance {
    /// Elements checked.
    pub elements: u64,
    /// Elements off the format's grid.
    pub off_grid: u64,
    /// Scales checked.
    pub scales: u64,
    /// Scales that break their constraint.
    pub bad_scales: u64,
}

impl RoleCompliance {
    /// Violations of either kind.
    pub fn violations(&self) -> u64 {
        self.off_grid + self.bad_scales
    }
    /// Off-grid elements in percent of the checked elements.
    pub fn off_grid_percent(&self) -> f64 {
        100.0 * self.off_grid as f64 / self.elements.max(1) as f64
    }
    fn add(&mut self, o: &RoleCompliance) {
        self.elements += o.elements;
        self.off_grid += o.off_grid;
        self.scales += o.scales;
        self.bad_scales += o.bad_scales;
    }
}

/// A value per tensor role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PerRole<T> {
    /// The weight.
    pub weight: Option<T>,
    /// The inputs (all inputs of the layer together).
    pub input: Option<T>,
    /// The output.
    pub output: Option<T>,
}

/// Everything measured for one layer of one variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerResult {
    /// Full layer name.
    pub name: String,
    /// Op kind.
    pub kind: String,
    /// Whether any quantizer of the layer is on.
    pub quantized: bool,
    /// The specs in force (`Display` of the spec), per role.
    pub specs: PerRole<String>,
    /// Propagated error: the quantized run's tensors against the FP32 run's (weight: the
    /// quantized weight; input: the input after the layer's input quantizer; output: the
    /// layer's output).
    pub propagated: PerRole<ErrorStats>,
    /// Isolated error of the output: the layer fed the FP32 run's inputs, quantized, against
    /// the FP32 output (only the layer's own quantization). Absent for unquantized layers.
    pub isolated_output: Option<ErrorStats>,
    /// Compliance of the quantized tensors, per role (absent where the role is not quantized).
    pub compliance: PerRole<RoleCompliance>,
    /// Weight elements (0 for layers without weights).
    pub weight_elements: u64,
    /// Stored bits per weight element, scales included (32 when the weight stays FP32).
    pub weight_bits_per_element: Option<f64>,
    /// Stored bits per input element, scales included (absent when inputs stay FP32).
    pub input_bits_per_element: Option<f64>,
    /// The accumulator of the layer's dot products (`Display` of it), absent when they run in
    /// f32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accumulator: Option<String>,
    /// The rotation of the layer's input and weight, absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<String>,
    /// SmoothQuant smoothing of the input and weight (`smoothquant α=0.5`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoothing: Option<String>,
    /// GPTQ of the weight (`gptq (damp 0.01)`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gptq: Option<String>,
}

/// The result of one variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantResult {
    /// The variant's name.
    pub name: String,
    /// Task metrics.
    pub task: TaskMetrics,
    /// The model output (logits) against the FP32 output.
    pub logits: ErrorStats,
    /// Per layer, in build order (empty for variants without detail).
    pub layers: Vec<LayerResult>,
    /// Samples the layer statistics and activation compliance were computed on (all samples
    /// unless [`Evaluator::set_layer_batches`] limited them; 0 without detail).
    #[serde(default)]
    pub layer_samples: u64,
}

/// What [`Evaluator::finish`] returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalResults {
    /// The FP32 reference's task metrics.
    pub fp32: TaskMetrics,
    /// One per variant, in the order given.
    pub variants: Vec<VariantResult>,
    /// Batches evaluated.
    pub batches: u64,
}

#[derive(Default)]
struct LayerAcc {
    weight: ErrorAccumulator,
    input: ErrorAccumulator,
    output: ErrorAccumulator,
    isolated: ErrorAccumulator,
    c_weight: Option<RoleCompliance>,
    c_input: Option<RoleCompliance>,
    c_output: Option<RoleCompliance>,
    weight_elements: u64,
    weight_bits: Option<f64>,
    input_bits: (f64, f64),
}

struct VariantState {
    v: Variant,
    task: TaskAccumulator,
    logits: ErrorAccumulator,
    layers: Vec<LayerAcc>,
    batches: u64,
    layer_samples: u64,
}

/// Evaluates a reference model and its quantized variants batch by batch.
///
/// ```
/// # use lowbit_eval::{Evaluator, Variant};
/// # fn demo(fp32: Box<dyn lowbit_nn::QuantModel>, q: Box<dyn lowbit_nn::QuantModel>,
/// #         x: &candle_core::Tensor, labels: &[u32]) -> lowbit_eval::Result<()> {
/// let mut ev = Evaluator::new(fp32, vec![Variant { name: "fp8".into(), model: q, detail: true }]);
/// ev.add_batch(x, labels)?; // 1 FP32 pass + 1 pass per variant
/// let results = ev.finish();
/// println!("{} {}", results.fp32.top1, results.variants[0].task.top1);
/// # Ok(()) }
/// ```
pub struct Evaluator {
    reference: Box<dyn QuantModel>,
    fp32: TaskAccumulator,
    variants: Vec<VariantState>,
    batches: u64,
    layer_batches: Option<u64>,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("variants", &self.variants.len())
            .field("batches", &self.batches)
            .finish_non_exhaustive()
    }
}

/// f32 contents of a tensor.
pub fn to_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

/// Calls `f` with the f32 contents of `t`: borrowed from the storage when `t` is a contiguous
/// f32 CPU tensor (no copy: activations of a 500-image batch are tens of MB), copied otherwise.
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    if t.dtype() == DType::F32 {
        let (storage, layout) = t.storage_and_layout();
        if let candle_core::Storage::Cpu(cpu) = &*storage
            && let (Ok(v), Some((a, b))) = (cpu.as_slice::<f32>(), layout.contiguous_offsets())
            && let Some(slice) = v.get(a..b)
        {
            return Ok(f(slice));
        }
    }
    let v = to_f32(t)?;
    Ok(f(&v))
}

/// `acc.add(x, q)` on two tensors without copying them where possible.
fn add_pair(acc: &mut ErrorAccumulator, x: &Tensor, q: &Tensor) -> Result<()> {
    with_f32(x, |a| with_f32(q, |b| acc.add(a, b)))?
}

/// The reference model's output and taps on one batch.
#[derive(Debug)]
pub struct Reference {
    /// Logits, flattened.
    pub logits: Vec<f32>,
    /// Classes per row.
    pub classes: usize,
    /// Layer name → record.
    pub taps: BTreeMap<String, TapRecord>,
}

impl Reference {
    /// Runs `model` in FP32 with taps on.
    pub fn run(model: &dyn QuantModel, input: &Tensor) -> Result<Reference> {
        Reference::run_with_taps(model, input, true)
    }

    /// Runs `model` in FP32, recording taps if `taps`.
    pub fn run_with_taps(model: &dyn QuantModel, input: &Tensor, taps: bool) -> Result<Reference> {
        let table = model.layers();
        table.set_mode(Mode::Fp32);
        table.context().set_taps(taps);
        let out = model.forward(input);
        let taps = table.context().take_taps();
        table.context().set_taps(false);
        let out = out?;
        let classes = out.dims().last().copied().unwrap_or(1);
        Ok(Reference {
            logits: to_f32(&out)?,
            classes,
            taps,
        })
    }
}

fn enabled(q: &Option<Quantizer>) -> Option<&Quantizer> {
    q.as_ref().filter(|q| q.is_enabled())
}

/// Bits per element of `n` elements stored under `spec` with `scales` (elements, one scale per
/// group, zero points, NVFP4's tensor scale), as [`lowbit_quant::QuantizedTensor::bits_per_element`].
pub fn bits_per_element(spec: &QuantSpec, n: usize, scales: &Scales) -> f64 {
    let eb = f64::from(spec.format().bits());
    let sb = f64::from(spec.scale().storage_bits());
    let zb = if spec.is_asymmetric() { eb } else { 0.0 };
    let ts = if scales.tensor_scale.is_some() {
        32.0
    } else {
        0.0
    };
    eb + (scales.values.len() as f64 * (sb + zb) + ts) / n.max(1) as f64
}

/// Checks one quantized tensor: `quantized` must lie on `spec`'s grid under `scales` (the
/// quantizer's frozen scales, or those computed from `source`, the tensor before quantization).
pub fn check_tensor(
    spec: &QuantSpec,
    frozen: Option<&Scales>,
    source: &Tensor,
    quantized: &Tensor,
) -> Result<RoleCompliance> {
    let computed;
    let scales = match frozen {
        Some(s) => s,
        None => {
            computed = with_f32(source, |v| spec.compute_scales(v, source.dims()))??;
            &computed
        }
    };
    check_with_scales(spec, scales, quantized)
}

/// Compliance of `quantized` under known scales.
fn check_with_scales(
    spec: &QuantSpec,
    scales: &Scales,
    quantized: &Tensor,
) -> Result<RoleCompliance> {
    let r = with_f32(quantized, |q| {
        check_compliance(spec, q, quantized.dims(), scales)
    })??;
    Ok(RoleCompliance {
        elements: r.elements as u64,
        off_grid: r.off_grid as u64,
        scales: r.scales as u64,
        bad_scales: r.bad_scales as u64,
    })
}

fn add_compliance(slot: &mut Option<RoleCompliance>, c: RoleCompliance) {
    slot.get_or_insert_with(RoleCompliance::default).add(&c);
}

impl VariantState {
    fn observe(
        &mut self,
        input: &Tensor,
        labels: &[u32],
        r: &Reference,
        layer_stats: bool,
    ) -> Result<()> {
        let detail = self.v.detail && layer_stats;
        let table = self.v.model.layers();
        table.set_mode(Mode::Quantize);
        table.context().set_taps(detail);
        let out = self.v.model.forward(input);
        let taps = table.context().take_taps();
        table.context().set_taps(false);
        let out = to_f32(&out?)?;
        if out.len() != r.logits.len() {
            return Err(EvalError::mismatch(
                &self.v.name,
                format!(
                    "output has {} values, the FP32 reference {}",
                    out.len(),
                    r.logits.len()
                ),
            ));
        }
        self.task.add(&out, r.classes, labels);
        self.logits.add(&r.logits, &out);
        if detail {
            self.observe_layers(r, &taps)?;
            self.layer_samples += labels.len() as u64;
        }
        self.batches += 1;
        Ok(())
    }

    /// Layer-wise comparison and compliance of one batch's taps against the reference taps.
    fn observe_layers(&mut self, r: &Reference, taps: &BTreeMap<String, TapRecord>) -> Result<()> {
        let first = self.layer_samples == 0;
        let entries: Vec<LayerEntry> = self.v.model.layers().layers().to_vec();
        for (entry, acc) in entries.iter().zip(self.layers.iter_mut()) {
            let (Some(fp), Some(q)) = (r.taps.get(&entry.name), taps.get(&entry.name)) else {
                continue;
            };
            observe_layer(entry, acc, fp, q, first)?;
        }
        Ok(())
    }
}

fn observe_layer(
    entry: &LayerEntry,
    acc: &mut LayerAcc,
    fp: &TapRecord,
    q: &TapRecord,
    first: bool,
) -> Result<()> {
    let lq = entry.op.quant();
    let name = &entry.name;
    // Weight (constant over batches: compared and checked once).
    if first && let (Some(fw), Some(qw)) = (&fp.weight, &q.weight) {
        // A rotating (smoothing) layer quantized `W R` (`(W · s) R`): its error is that of
        // `Q(W R) Rᵀ` (`Q(…) Rᵀ / s`) against `W`, its compliance that of `Q(W R)` against the
        // scales of `W R`.
        let (fwv, qwv) = (to_f32(fw)?, to_f32(qw)?);
        acc.weight.add(&fwv, &to_f32(&lq.weight_back(qw)?)?);
        acc.weight_elements = fwv.len() as u64;
        acc.weight_bits = Some(32.0);
        if let Some(wq) = enabled(&lq.weight) {
            let spec = wq.spec();
            // A GPTQ weight lies on the scales GPTQ chose (groups see the updated weight).
            let scales = match lq.gptq_scales() {
                Some(s) => s,
                None => spec.compute_scales(&to_f32(&lq.transform_weight(fw)?)?, fw.dims())?,
            };
            acc.weight_bits = Some(bits_per_element(&spec, fwv.len(), &scales));
            let r = check_compliance(&spec, &qwv, qw.dims(), &scales)?;
            add_compliance(
                &mut acc.c_weight,
                RoleCompliance {
                    elements: r.elements as u64,
                    off_grid: r.off_grid as u64,
                    scales: r.scales as u64,
                    bad_scales: r.bad_scales as u64,
                },
            );
        }
    }
    if fp.inputs.len() != q.inputs.len() {
        return Err(EvalError::mismatch(
            name,
            "the quantized run recorded a different number of inputs than the FP32 run",
        ));
    }
    // Inputs: the tensor the layer computes on (after its input quantizer) against FP32.
    let mut qins = Vec::with_capacity(q.inputs.len());
    for (index, (fx, qx)) in fp.inputs.iter().zip(&q.inputs).enumerate() {
        if !qx.dtype().is_float() {
            // Token ids (an embedding's input): nothing to quantize or compare.
            qins.push(qx.clone());
            continue;
        }
        let qin = lq.quantize_input_at(qx, index)?;
        add_pair(&mut acc.input, fx, &lq.input_back_at(&qin, index)?)?;
        if let Some(iq) = enabled(&lq.input) {
            let spec = iq.spec();
            let scales = match iq.frozen() {
                Some(s) => (*s).clone(),
                None => {
                    let seen = lq.transform_input_at(qx, index)?;
                    with_f32(&seen, |v| spec.compute_scales(v, seen.dims()))??
                }
            };
            let c = check_with_scales(&spec, &scales, &qin)?;
            add_compliance(&mut acc.c_input, c);
            let n = qx.elem_count();
            acc.input_bits.0 += bits_per_element(&spec, n, &scales) * n as f64;
            acc.input_bits.1 += n as f64;
        }
        qins.push(qin);
    }
    add_pair(&mut acc.output, &fp.output, &q.output)?;
    if let Some(oq) = enabled(&lq.output) {
        // The output before its quantizer, recomputed from the quantized inputs.
        let raw = entry.op.compute(&qins)?;
        let frozen = oq.frozen();
        let c = check_tensor(&oq.spec(), frozen.as_deref(), &raw, &q.output)?;
        add_compliance(&mut acc.c_output, c);
    }
    // Isolated: this layer alone, fed the FP32 inputs.
    if lq.quantizers().any(|q| q.is_enabled()) {
        let refs: Vec<&Tensor> = fp.inputs.iter().collect();
        let y = entry.op.forward(&refs)?;
        add_pair(&mut acc.isolated, &fp.output, &y)?;
    }
    Ok(())
}

impl Evaluator {
    /// An evaluator of `variants` against `reference` (built without quantizers or with any:
    /// it always runs in [`Mode::Fp32`]).
    pub fn new(reference: Box<dyn QuantModel>, variants: Vec<Variant>) -> Evaluator {
        let variants = variants
            .into_iter()
            .map(|v| {
                let n = v.model.layers().layers().len();
                VariantState {
                    v,
                    task: TaskAccumulator::default(),
                    logits: ErrorAccumulator::default(),
                    layers: (0..n).map(|_| LayerAcc::default()).collect(),
                    batches: 0,
                    layer_samples: 0,
                }
            })
            .collect();
        Evaluator {
            reference,
            fp32: TaskAccumulator::default(),
            variants,
            batches: 0,
            layer_batches: None,
        }
    }

    /// Computes the layer-wise statistics (taps, propagated and isolated errors, activation
    /// compliance) on the first `n` batches only (`None`: on every batch, the default). Task
    /// metrics and the output comparison always cover every batch; weights are compared and
    /// checked once either way.
    pub fn set_layer_batches(&mut self, n: Option<u64>) {
        self.layer_batches = n;
    }

    /// The variants' names.
    pub fn variant_names(&self) -> Vec<&str> {
        self.variants.iter().map(|v| v.v.name.as_str()).collect()
    }

    /// Evaluates one batch: the reference once, then every variant (in parallel on the
    /// current rayon pool).
    pub fn add_batch(&mut self, input: &Tensor, labels: &[u32]) -> Result<()> {
        let layer_stats = self.layer_stats_now();
        let taps = layer_stats && self.variants.iter().any(|v| v.v.detail);
        let r = Reference::run_with_taps(self.reference.as_ref(), input, taps)?;
        if r.logits.len() != labels.len() * r.classes {
            return Err(EvalError::mismatch(
                "batch",
                format!(
                    "{} labels for an output of {} values in rows of {}",
                    labels.len(),
                    r.logits.len(),
                    r.classes
                ),
            ));
        }
        self.fp32.add(&r.logits, r.classes, labels);
        self.add_reference_batch(input, labels, &r)?;
        self.batches += 1;
        Ok(())
    }

    /// Feeds every variant one batch against an already computed reference (lets tests plant
    /// values in the reference taps).
    pub fn add_reference_batch(
        &mut self,
        input: &Tensor,
        labels: &[u32],
        r: &Reference,
    ) -> Result<()> {
        let layer_stats = self.layer_stats_now();
        self.variants
            .par_iter_mut()
            .map(|v| v.observe(input, labels, r, layer_stats))
            .collect::<Result<Vec<()>>>()?;
        Ok(())
    }

    /// Whether the current batch gets layer statistics.
    fn layer_stats_now(&self) -> bool {
        self.layer_batches.is_none_or(|n| self.batches < n)
    }

    /// Compares one variant's recorded taps against reference taps (the layer-wise part of
    /// [`add_batch`](Self::add_batch), exposed for checking planted values).
    pub fn observe_taps(
        &mut self,
        variant: usize,
        r: &Reference,
        taps: &BTreeMap<String, TapRecord>,
    ) -> Result<()> {
        let v = self
            .variants
            .get_mut(variant)
            .ok_or_else(|| EvalError::mismatch("variant", format!("no variant {variant}")))?;
        v.observe_layers(r, taps)?;
        v.layer_samples += (r.logits.len() / r.classes.max(1)) as u64;
        v.batches += 1;
        Ok(())
    }

    /// The results.
    pub fn finish(self) -> EvalResults {
        let variants = self
            .variants
            .into_iter()
            .map(|s| {
                let layers = if s.v.detail {
                    s.v.model
                        .layers()
                        .layers()
                        .iter()
                        .zip(&s.layers)
                        .map(|(e, a)| layer_result(e, a))
                        .collect()
                } else {
                    Vec::new()
                };
                VariantResult {
                    name: s.v.name,
                    task: s.task.finish(),
                    logits: s.logits.finish(),
                    layers,
                    layer_samples: s.layer_samples,
                }
            })
            .collect();
        EvalResults {
            fp32: self.fp32.finish(),
            variants,
            batches: self.batches,
        }
    }
}

fn layer_result(e: &LayerEntry, a: &LayerAcc) -> LayerResult {
    let lq = e.op.quant();
    let spec = |q: &Option<Quantizer>| enabled(q).map(|q| q.spec().to_string());
    let stats = |acc: &ErrorAccumulator| (!acc.is_empty()).then(|| acc.finish());
    LayerResult {
        name: e.name.clone(),
        kind: e.kind.clone(),
        quantized: lq.quantizers().any(|q| q.is_enabled())
            || lq.enabled_accumulator().is_some()
            || lq.enabled_rotation().is_some()
            || lq.enabled_smoothing().is_some()
            || lq.enabled_gptq().is_some(),
        specs: PerRole {
            weight: spec(&lq.weight),
            input: spec(&lq.input),
            output: spec(&lq.output),
        },
        propagated: PerRole {
            weight: stats(&a.weight),
            input: stats(&a.input),
            output: stats(&a.output),
        },
        isolated_output: stats(&a.isolated),
        compliance: PerRole {
            weight: a.c_weight,
            input: a.c_input,
            output: a.c_output,
        },
        weight_elements: a.weight_elements,
        weight_bits_per_element: a.weight_bits,
        input_bits_per_element: (a.input_bits.1 > 0.0).then(|| a.input_bits.0 / a.input_bits.1),
        accumulator: lq.enabled_accumulator().map(|a| a.to_string()),
        rotation: lq.enabled_rotation().map(|r| r.to_string()),
        smoothing: lq.enabled_smoothing().map(|s| s.to_string()),
        gptq: lq.enabled_gptq().map(|g| g.to_string()),
    }
}
