//! `lowbit qat` and `lowbit pipeline`: quantization-aware training of `fashion_cnn`.
//!
//! - `qat`: the config's quantizers in the loop (fake-quant forward, straight-through
//!   backward), AdamW with a cosine schedule, seeded data order; the test top-1 before training
//!   (PTQ) and after every epoch; a checkpoint after every epoch (`checkpoint.safetensors`,
//!   `best.safetensors`; `--init` resumes); `qat.json` with the curves.
//! - `pipeline` (the power-of-2 seed's workflow): (1) PTQ of weights and biases, (2) weight-only
//!   QAT, (3) PTQ calibration of inputs and outputs on training batches (max, frozen), then
//!   `hardware_report.json`: every quantized tensor's scales as the hardware applies them
//!   (`2^(-k)`, `x >> k`, bit width) and the accuracies of every step.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use lowbit_models::data::{self, FashionMnist, Split};
use lowbit_models::{FashionCnn, fashion};
use lowbit_nn::{Mode, QuantConfig, QuantModel, Quantizer};
use lowbit_quant::{ScaleKind, shift_report};
use serde::Serialize;

use crate::error::{CliError, Result};
use crate::models::model_err;
use crate::quantized_checkpoint::{load_quantized, quantized_params, save_quantized};

/// Training options shared by `qat` and `pipeline`.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainOpts {
    /// The model (training needs its training split: fashion_cnn).
    #[arg(long, default_value = "fashion_cnn")]
    pub model: String,
    /// Epochs over the training split.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Use only the first N training images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    /// AdamW's decoupled weight decay (AdamW only).
    #[arg(long, default_value_t = 1e-2)]
    pub weight_decay: f64,
    /// Optimizer: `adamw` or `sgd` (plain SGD).
    #[arg(long, default_value = "adamw")]
    pub optimizer: String,
    /// Learning-rate schedule: `cosine` (to 0 over all steps) or `step` (× `--gamma` every
    /// `--step-epochs` epochs).
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
    /// Epochs per step of the `step` schedule.
    #[arg(long, default_value_t = 1)]
    pub step_epochs: usize,
    /// Factor per step of the `step` schedule.
    #[arg(long, default_value_t = 0.1)]
    pub gamma: f64,
    /// Images per training batch.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Seed of the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Start from these weights (default: the committed FP32 weights).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Directory with train-*.gz (scripts/fetch-fashion-mnist.sh).
    #[arg(long, default_value = data::ASSETS_DIR)]
    pub train_data: PathBuf,
    /// Parent folder of the run directory.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// `qat` only: calibrate every quantizer (max) on this many training batches before
    /// training and hold the scales fixed during QAT (frozen-scale mode; 0 = dynamic scales,
    /// recomputed from the tensors at every step).
    #[arg(long, default_value_t = 0)]
    pub frozen_scales: usize,
    /// `qat` only: learn the weight scales (LSQ: the scale is a trainable tensor with its own
    /// gradient through the straight-through estimator), starting from the dynamic scales.
    #[arg(long)]
    pub learned_scales: bool,
    /// Train on the committed test split instead (tests: CI has no training split).
    #[arg(long, hide = true)]
    pub train_on_test: bool,
}

/// One epoch of a training curve.
#[derive(Clone, Debug, Serialize)]
pub struct EpochRow {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Mean test loss.
    pub test_loss: f64,
    /// Test top-1 of the quantized model.
    pub test_top1: f64,
    /// Training seconds.
    pub seconds: f64,
}

/// `qat.json`.
#[derive(Clone, Debug, Serialize)]
pub struct QatReport {
    /// Format version.
    pub schema_version: u32,
    /// Model name.
    pub model: String,
    /// Config file.
    pub config: String,
    /// Training images per epoch.
    pub train_images: usize,
    /// Test images.
    pub test_images: usize,
    /// FP32 test top-1 of the initial weights.
    pub fp32_top1: f64,
    /// Test top-1 with the quantizers on, before training.
    pub ptq_top1: f64,
    /// One row per epoch.
    pub epochs: Vec<EpochRow>,
    /// Best test top-1 over the epochs (and its epoch).
    pub best_top1: f64,
    /// The epoch of `best_top1` (0: no epoch beat PTQ).
    pub best_epoch: usize,
    /// Bits per weight element of the low-bit checkpoint (`quantized/`), scales included.
    pub quantized_weight_bits: f64,
    /// Test top-1 of the low-bit checkpoint reloaded (the last epoch's weights).
    pub quantized_checkpoint_top1: f64,
    /// With `--learned-scales`: how the weight scales moved.
    pub learned_scales: Option<LearnedSummary>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

fn timestamp_dir(out: &Path, label: &str) -> PathBuf {
    out.join(format!("{}-fashion_cnn-{label}", crate::run::timestamp()))
}

fn config_label(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into())
}

struct Setup {
    model: FashionCnn,
    vm: candle_nn::VarMap,
    train: FashionMnist,
    test: FashionMnist,
    dev: Device,
}

fn setup(config: &QuantConfig, opts: &TrainOpts) -> Result<Setup> {
    if opts.batch_size == 0 || opts.epochs == 0 {
        return Err(CliError::Usage(
            "--batch-size and --epochs must be at least 1".into(),
        ));
    }
    if opts.model != "fashion_cnn" {
        return Err(CliError::Usage(format!(
            "--model {}: quantization-aware training supports fashion_cnn (the model with a training split)",
            opts.model
        )));
    }
    if !matches!(opts.optimizer.as_str(), "adamw" | "sgd") {
        return Err(CliError::Usage(format!(
            "--optimizer {}: expected adamw or sgd",
            opts.optimizer
        )));
    }
    if !matches!(opts.schedule.as_str(), "cosine" | "step") {
        return Err(CliError::Usage(format!(
            "--schedule {}: expected cosine or step",
            opts.schedule
        )));
    }
    let dev = Device::Cpu;
    let train = if opts.train_on_test {
        FashionMnist::committed_test(opts.limit)
    } else {
        FashionMnist::load(&opts.train_data, Split::Train, opts.limit)
    }
    .map_err(|e| {
        CliError::Usage(format!(
            "{e} (the training split is not committed: run scripts/fetch-fashion-mnist.sh, or pass --train-data)"
        ))
    })?;
    let test = FashionMnist::committed_test(opts.test_limit).map_err(model_err)?;
    let (model, mut vm) = FashionCnn::new_trainable(config, opts.seed, &dev).map_err(model_err)?;
    let init = opts
        .init
        .clone()
        .unwrap_or_else(lowbit_models::fashion::weights_path);
    vm.load(&init)
        .map_err(|e| CliError::Other(format!("cannot load {}: {e}", init.display())))?;
    Ok(Setup {
        model,
        vm,
        train,
        test,
        dev,
    })
}

fn evaluate(s: &Setup) -> Result<fashion::EvalStats> {
    fashion::evaluate(&s.model, s.test.batches(500, &s.dev).map_err(model_err)?).map_err(model_err)
}

/// Trains `s.model` (in its current quantizer state) for `opts.epochs`; saves the checkpoints
/// into `dir`; returns the curve and the best (top-1, epoch), starting from `start_top1`.
fn train(
    s: &mut Setup,
    opts: &TrainOpts,
    dir: &Path,
    start_top1: f64,
    extra: Vec<candle_core::Var>,
) -> Result<(Vec<EpochRow>, f64, usize)> {
    let mut vars = FashionCnn::trainable_vars(&s.vm).map_err(model_err)?;
    vars.extend(extra);
    let mut opt = match opts.optimizer.as_str() {
        "adamw" => Opt::AdamW(AdamW::new(
            vars,
            ParamsAdamW {
                lr: opts.lr,
                weight_decay: opts.weight_decay,
                ..Default::default()
            },
        )?),
        "sgd" => Opt::Sgd(candle_nn::SGD::new(vars, opts.lr)?),
        other => {
            return Err(CliError::Usage(format!(
                "--optimizer {other}: expected adamw or sgd"
            )));
        }
    };
    let step_schedule = match opts.schedule.as_str() {
        "cosine" => false,
        "step" => true,
        other => {
            return Err(CliError::Usage(format!(
                "--schedule {other}: expected cosine or step"
            )));
        }
    };
    let steps = s.train.len().div_ceil(opts.batch_size);
    let total = (steps * opts.epochs).max(1) as f64;
    let (mut best, mut best_epoch) = (start_top1, 0);
    let mut rows = Vec::new();
    for epoch in 0..opts.epochs {
        let offset = epoch * steps;
        let lr = |step: usize| {
            if step_schedule {
                opts.lr * opts.gamma.powi((epoch / opts.step_epochs.max(1)) as i32)
            } else {
                let t = (offset + step) as f64;
                opts.lr * 0.5 * (1.0 + (std::f64::consts::PI * t / total).cos())
            }
        };
        let batches = s
            .train
            .shuffled_batches(opts.batch_size, opts.seed + epoch as u64, &s.dev)
            .map_err(model_err)?;
        let st = match &mut opt {
            Opt::AdamW(o) => fashion::train_epoch(&s.model, o, batches, &lr),
            Opt::Sgd(o) => fashion::train_epoch(&s.model, o, batches, &lr),
        }
        .map_err(model_err)?;
        let ev = evaluate(s)?;
        let row = EpochRow {
            epoch: epoch + 1,
            train_loss: st.mean_loss,
            test_loss: ev.mean_loss,
            test_top1: ev.accuracy,
            seconds: st.seconds,
        };
        println!(
            "epoch {}: train loss {:.4}, test loss {:.4}, test top-1 {:.2} %, {:.1} s",
            row.epoch,
            row.train_loss,
            row.test_loss,
            100.0 * row.test_top1,
            row.seconds
        );
        FashionCnn::save(&s.vm, dir.join("checkpoint.safetensors")).map_err(model_err)?;
        if ev.accuracy > best {
            best = ev.accuracy;
            best_epoch = epoch + 1;
            FashionCnn::save(&s.vm, dir.join("best.safetensors")).map_err(model_err)?;
        }
        rows.push(row);
    }
    Ok((rows, best, best_epoch))
}

/// A weight scale made trainable.
struct Learned {
    var: candle_core::Var,
    init: Vec<f32>,
}

/// How the learned weight scales moved during training (`qat.json`).
#[derive(Clone, Debug, Serialize)]
pub struct LearnedSummary {
    /// Weight tensors with a learned scale.
    pub tensors: usize,
    /// Scales in all.
    pub scales: usize,
    /// The smallest scale after training (they must stay positive).
    pub min_scale: f32,
    /// Mean of |final − initial| / initial.
    pub mean_abs_relative_change: f64,
}

/// Turns every enabled weight quantizer's scale into a trainable tensor, initialised with the
/// weight's dynamic scales.
fn learn_scales(s: &Setup) -> Result<Vec<Learned>> {
    let mut out = Vec::new();
    for p in quantized_params(&s.model, &s.vm, false)? {
        let init = p.scales()?.values;
        let var = p.quantizer.enable_learned_scale(&init)?;
        out.push(Learned { var, init });
    }
    if out.is_empty() {
        return Err(CliError::Usage(
            "--learned-scales: the config quantizes no weight".into(),
        ));
    }
    Ok(out)
}

fn summarize_learned(learned: &[Learned]) -> Result<Option<LearnedSummary>> {
    if learned.is_empty() {
        return Ok(None);
    }
    let (mut n, mut min, mut rel) = (0usize, f32::INFINITY, 0.0f64);
    for l in learned {
        let now = l.var.as_tensor().to_vec1::<f32>()?;
        for (a, b) in now.iter().zip(&l.init) {
            n += 1;
            min = min.min(*a);
            rel += f64::from((a - b).abs() / b);
        }
    }
    Ok(Some(LearnedSummary {
        tensors: learned.len(),
        scales: n,
        min_scale: min,
        mean_abs_relative_change: rel / n.max(1) as f64,
    }))
}

/// The optimizer of a run.
enum Opt {
    AdamW(AdamW),
    Sgd(candle_nn::SGD),
}

/// `report.html` of a training run: test top-1 per epoch (epoch 0 = before training) and the
/// losses, as inline SVG.
fn write_curves_html(
    path: &Path,
    title: &str,
    start_top1: f64,
    rows: &[EpochRow],
    notes: &str,
) -> Result<()> {
    use lowbit_eval::html::{escape, line_chart, page};
    let mut labels = vec!["0".to_string()];
    labels.extend(rows.iter().map(|r| r.epoch.to_string()));
    let mut top1 = vec![100.0 * start_top1];
    top1.extend(rows.iter().map(|r| 100.0 * r.test_top1));
    let acc = line_chart(
        "test top-1 per epoch (epoch 0: before training)",
        &labels,
        &[("test top-1".into(), top1)],
        "top-1 %",
    )?;
    let loss = line_chart(
        "loss per epoch",
        &labels[1..],
        &[
            (
                "train loss".into(),
                rows.iter().map(|r| r.train_loss).collect(),
            ),
            (
                "test loss".into(),
                rows.iter().map(|r| r.test_loss).collect(),
            ),
        ],
        "cross-entropy",
    )?;
    let mut table = String::from(
        "<table><tr><th>epoch</th><th>train loss</th><th>test loss</th><th>test top-1 %</th><th>seconds</th></tr>",
    );
    for r in rows {
        table.push_str(&format!(
            "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.2}</td><td>{:.1}</td></tr>",
            r.epoch,
            r.train_loss,
            r.test_loss,
            100.0 * r.test_top1,
            r.seconds
        ));
    }
    table.push_str("</table>");
    let body = format!(
        "<h1>{}</h1><p>{}</p>{acc}{loss}{table}",
        escape(title),
        escape(notes)
    );
    std::fs::write(path, page(title, &body))
        .map_err(|e| CliError::Other(format!("cannot write {}: {e}", path.display())))
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Other(e.to_string()))?;
    Ok(lowbit_eval::write_atomic(path, text.as_bytes())?)
}

/// `lowbit qat`.
pub fn qat(config_path: &Path, opts: &TrainOpts) -> Result<()> {
    let t0 = Instant::now();
    let config = QuantConfig::from_file(config_path)?;
    let mut s = setup(&config, opts)?;
    // Learned scales start at the dynamic scales (so the PTQ figure below is unchanged);
    // a spec that cannot learn its scale fails here, before anything is written.
    let learned = if opts.learned_scales {
        learn_scales(&s)?
    } else {
        Vec::new()
    };
    let dir = timestamp_dir(&opts.out, &format!("qat-{}", config_label(config_path)));
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", dir.display())))?;
    s.model.layers().set_mode(Mode::Fp32);
    let fp32 = evaluate(&s)?.accuracy;
    s.model.layers().set_mode(Mode::Quantize);
    if opts.frozen_scales > 0 {
        calibrate(&s, opts.batch_size, opts.frozen_scales)?;
        let scales = s.model.layers().freeze()?;
        scales.save(&dir.join("scales.json"))?;
        println!(
            "scales calibrated on {} batches and frozen for training",
            opts.frozen_scales
        );
    }
    let ptq = evaluate(&s)?.accuracy;
    println!(
        "fp32 top-1 {:.2} %, PTQ top-1 {:.2} %; training on {} images",
        100.0 * fp32,
        100.0 * ptq,
        s.train.len()
    );
    let extra = learned.iter().map(|l| l.var.clone()).collect();
    let (epochs, best, best_epoch) = train(&mut s, opts, &dir, ptq, extra)?;
    let learned_summary = summarize_learned(&learned)?;
    if let Some(l) = &learned_summary {
        println!(
            "learned scales: {} tensors, {} scales, smallest {:.3e}, mean |relative change| {:.2} %",
            l.tensors,
            l.scales,
            l.min_scale,
            100.0 * l.mean_abs_relative_change
        );
    }
    // The trained model as real low-bit tensors, reloaded and evaluated.
    let qdir = dir.join("quantized");
    let weight_bits = save_quantized(&s.model, &s.vm, &qdir)?;
    let reloaded = load_quantized(&qdir, &config, &s.dev)?;
    if opts.frozen_scales > 0 {
        // The activations' frozen scales travel in scales.json.
        let frozen = lowbit_nn::StaticScales::load(&dir.join("scales.json"))?;
        reloaded.layers().load_scales(&frozen)?;
    }
    let reloaded_top1 =
        fashion::evaluate(&reloaded, s.test.batches(500, &s.dev).map_err(model_err)?)
            .map_err(model_err)?
            .accuracy;
    println!(
        "low-bit checkpoint: {} ({weight_bits:.2} bits per weight, scales included), reloaded top-1 {:.2} %",
        qdir.display(),
        100.0 * reloaded_top1
    );
    let report = QatReport {
        schema_version: 1,
        model: "fashion_cnn".into(),
        config: config_path.display().to_string(),
        train_images: s.train.len(),
        test_images: s.test.len(),
        fp32_top1: fp32,
        ptq_top1: ptq,
        epochs,
        best_top1: best,
        best_epoch,
        quantized_weight_bits: weight_bits,
        quantized_checkpoint_top1: reloaded_top1,
        learned_scales: learned_summary,
        seconds: t0.elapsed().as_secs_f64(),
    };
    write_json(&dir.join("qat.json"), &report)?;
    write_curves_html(
        &dir.join("report.html"),
        &format!("QAT of fashion_cnn with {}", config_path.display()),
        ptq,
        &report.epochs,
        &format!(
            "FP32 top-1 {:.2} %, PTQ {:.2} %, best {:.2} % (epoch {best_epoch}); {} training images per epoch",
            100.0 * fp32,
            100.0 * ptq,
            100.0 * best,
            report.train_images
        ),
    )?;
    std::fs::copy(config_path, dir.join("config.yaml"))
        .map_err(|e| CliError::Other(format!("cannot copy the config: {e}")))?;
    println!(
        "best top-1 {:.2} % (epoch {best_epoch}); run: {}",
        100.0 * best,
        dir.display()
    );
    Ok(())
}

/// One quantized tensor in `hardware_report.json`.
#[derive(Clone, Debug, Serialize)]
pub struct HardwareTensor {
    /// Layer name.
    pub layer: String,
    /// `weight`, `bias`, `input` or `output`.
    pub role: String,
    /// The spec (`Display`).
    pub spec: String,
    /// Element bit width.
    pub bit_width: u32,
    /// Power-of-two scales as shifts (one per group), when the scales are powers of two.
    pub shifts: Option<Vec<lowbit_quant::ShiftReport>>,
    /// The effective scales when they are not all powers of two.
    pub scales: Option<Vec<f32>>,
}

/// `hardware_report.json`.
#[derive(Clone, Debug, Serialize)]
pub struct HardwareReport {
    /// Format version.
    pub schema_version: u32,
    /// Config file.
    pub config: String,
    /// FP32 top-1 of the initial weights.
    pub initial_fp32_top1: f64,
    /// Step 1: weights and biases quantized, before training.
    pub ptq_top1: f64,
    /// Step 2: best test top-1 of weight-only QAT.
    pub best_qat_top1: f64,
    /// Step 3: everything quantized, inputs/outputs with frozen calibrated scales.
    pub final_top1: f64,
    /// The weight-only QAT curve.
    pub qat_epochs: Vec<EpochRow>,
    /// Every quantized tensor.
    pub tensors: Vec<HardwareTensor>,
}

fn set_roles(model: &FashionCnn, weights: bool, activations: bool) {
    for l in model.layers().layers() {
        let q = l.op.quant();
        let set = |r: &Option<Quantizer>, on: bool| {
            if let Some(r) = r {
                r.set_enabled(on);
            }
        };
        set(&q.weight, weights);
        set(&q.bias, weights);
        set(&q.input, activations);
        set(&q.output, activations);
    }
}

fn tensor_entry(
    layer: &str,
    role: &str,
    q: &Quantizer,
    scales: &lowbit_quant::Scales,
) -> HardwareTensor {
    let spec = q.spec();
    let po2 = matches!(
        spec.scale(),
        ScaleKind::PowerOfTwo { .. } | ScaleKind::E8M0 { .. }
    );
    let shifts = if po2 {
        shift_report(&spec, scales).ok()
    } else {
        None
    };
    let scales = shifts.is_none().then(|| {
        (0..scales.values.len())
            .map(|i| scales.effective(&spec, i).unwrap_or(f32::NAN))
            .collect()
    });
    HardwareTensor {
        layer: layer.into(),
        role: role.into(),
        spec: spec.to_string(),
        bit_width: spec.format().bits(),
        shifts,
        scales,
    }
}

fn hardware_tensors(s: &Setup) -> Result<Vec<HardwareTensor>> {
    let params = quantized_params(&s.model, &s.vm, true)?;
    let mut out = Vec::new();
    for l in s.model.layers().layers() {
        for p in params.iter().filter(|p| p.layer == l.name) {
            out.push(tensor_entry(p.layer, p.role, p.quantizer, &p.scales()?));
        }
        let q = l.op.quant();
        for (role, quant) in [("input", &q.input), ("output", &q.output)] {
            let Some(quant) = quant.as_ref().filter(|q| q.is_enabled()) else {
                continue;
            };
            if let Some(f) = quant.frozen() {
                out.push(tensor_entry(&l.name, role, quant, &f));
            }
        }
    }
    Ok(out)
}

/// Observes `n` training batches (in order) with every enabled quantizer in calibration mode
/// (max); the caller freezes.
fn calibrate(s: &Setup, batch_size: usize, n: usize) -> Result<()> {
    s.model
        .layers()
        .begin_calibration(lowbit_quant::Method::Max)?;
    let mut batches = s.train.batches(batch_size, &s.dev).map_err(model_err)?;
    for _ in 0..n.max(1) {
        let Some(b) = batches.next() else { break };
        let b = b.map_err(model_err)?;
        s.model.forward(&b.images)?;
    }
    Ok(())
}

/// `lowbit pipeline`.
pub fn pipeline(config_path: &Path, opts: &TrainOpts, calib_batches: usize) -> Result<()> {
    let config = QuantConfig::from_file(config_path)?;
    let mut s = setup(&config, opts)?;
    let dir = timestamp_dir(
        &opts.out,
        &format!("pipeline-{}", config_label(config_path)),
    );
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", dir.display())))?;
    s.model.layers().set_mode(Mode::Fp32);
    let fp32 = evaluate(&s)?.accuracy;
    // (1) PTQ of weights and biases.
    s.model.layers().set_mode(Mode::Quantize);
    set_roles(&s.model, true, false);
    let ptq = evaluate(&s)?.accuracy;
    println!(
        "(1) weights and biases quantized: top-1 {:.2} % (FP32 {:.2} %)",
        100.0 * ptq,
        100.0 * fp32
    );
    // (2) Weight-only QAT; the best epoch's weights are kept.
    let (epochs, best, best_epoch) = train(&mut s, opts, &dir, ptq, Vec::new())?;
    if best_epoch > 0 {
        s.vm.load(dir.join("best.safetensors"))
            .map_err(|e| CliError::Other(format!("cannot reload the best weights: {e}")))?;
    }
    println!(
        "(2) weight-only QAT: best top-1 {:.2} % (epoch {best_epoch})",
        100.0 * best
    );
    // (3) Calibration of inputs and outputs on training batches, frozen.
    set_roles(&s.model, true, true);
    calibrate(&s, opts.batch_size, calib_batches)?;
    let scales = s.model.layers().freeze()?;
    scales.save(&dir.join("scales.json"))?;
    let last = evaluate(&s)?.accuracy;
    println!(
        "(3) inputs and outputs calibrated (max, {calib_batches} batches) and frozen: top-1 {:.2} %",
        100.0 * last
    );
    let report = HardwareReport {
        schema_version: 1,
        config: config_path.display().to_string(),
        initial_fp32_top1: fp32,
        ptq_top1: ptq,
        best_qat_top1: best,
        final_top1: last,
        qat_epochs: epochs,
        tensors: hardware_tensors(&s)?,
    };
    write_json(&dir.join("hardware_report.json"), &report)?;
    write_curves_html(
        &dir.join("report.html"),
        &format!(
            "PTQ → QAT → PTQ pipeline of fashion_cnn with {}",
            config_path.display()
        ),
        ptq,
        &report.qat_epochs,
        &format!(
            "FP32 {:.2} %; (1) weights quantized {:.2} %; (2) weight-only QAT best {:.2} %; (3) inputs and outputs calibrated {:.2} %",
            100.0 * fp32,
            100.0 * ptq,
            100.0 * best,
            100.0 * last
        ),
    )?;
    std::fs::copy(config_path, dir.join("config.yaml"))
        .map_err(|e| CliError::Other(format!("cannot copy the config: {e}")))?;
    println!(
        "hardware report: {}",
        dir.join("hardware_report.json").display()
    );
    Ok(())
}
