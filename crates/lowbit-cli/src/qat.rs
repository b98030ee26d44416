//! `lowbit qat` and `lowbit pipeline`: quantization-aware training of `fashion_cnn`.
//!
//! - `qat`: the config's quantizers in the loop (fake-quant forward, straight-through
//!   backward), AdamW (or SGD) on a cosine (or step) schedule, seeded data order; the test
//!   top-1 before training (PTQ) and after every epoch; after every epoch a resumable
//!   checkpoint (`checkpoint/`: weights, optimizer state, run state; `--resume RUN_DIR`
//!   continues bit for bit, see [`resume`]) and `checkpoint.safetensors` / `best.safetensors`;
//!   `qat.json` with the curves. Batch norm in training mode or, with `--bn fold`, folded into
//!   the convolutions with frozen statistics (see [`fold`]).
//! - `pipeline` (the power-of-2 seed's workflow): (1) PTQ of weights and biases, (2) weight-only
//!   QAT, (3) PTQ calibration of inputs and outputs on training batches (max, frozen), then
//!   `hardware_report.json`: every quantized tensor's scales as the hardware applies them
//!   (`2^(-k)`, `x >> k`, bit width) and the accuracies of every step.

pub(crate) mod fold;
pub(crate) mod optim;
mod pipeline;
pub(crate) mod report;
pub(crate) mod resume;

pub use pipeline::pipeline;
pub use report::{EpochRow, LearnedSummary, QatReport};
use report::{write_curves_html, write_json};

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Var};
use candle_nn::{ParamsAdamW, VarMap};
use lowbit_models::data::{self, FashionMnist, Split};
use lowbit_models::{FashionCnn, fashion};
use lowbit_nn::{Mode, QuantConfig, QuantModel};

use crate::error::{CliError, Result};
use crate::models::model_err;
use crate::qat::fold::{BnMode, Folding};
use crate::qat::optim::{AdamW, NamedVar, Opt, Sgd, SgdParams};
use crate::qat::resume::RunState;
use crate::quantized_checkpoint::{
    Params, load_quantized, quantized_params, save_quantized, vm_params,
};

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
    /// Optimizer: `adamw` or `sgd` (PyTorch's SGD: plain, or with `--momentum`).
    #[arg(long, default_value = "adamw")]
    pub optimizer: String,
    /// SGD's momentum (SGD only; 0 = plain SGD).
    #[arg(long, default_value_t = 0.0)]
    pub momentum: f64,
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
    /// Batch norm during QAT: `train` (batch statistics, running statistics updated) or
    /// `fold` (folded into the convolution before it, w·γ/√(σ²+ε) quantized by the
    /// convolution's weight quantizer, running statistics frozen; the low-bit checkpoint and
    /// the hardware report hold the folded convolutions).
    #[arg(long, default_value = "train")]
    pub bn: String,
    /// `qat` only: continue the run in this directory from its last checkpoint
    /// (`checkpoint/`) up to `--epochs` epochs in all; every other training option and the
    /// config must be the run's.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// `qat` only: stop after this many epochs in all (the schedule still spans `--epochs`;
    /// continue later with `--resume`).
    #[arg(long, value_name = "EPOCHS")]
    pub stop_after: Option<usize>,
    /// Train on the committed test split instead (tests: CI has no training split).
    #[arg(long, hide = true)]
    pub train_on_test: bool,
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
    vm: VarMap,
    train: FashionMnist,
    test: FashionMnist,
    dev: Device,
    /// With `--bn fold`.
    folding: Option<Folding>,
}

impl Setup {
    /// The parameters of the model as deployed (folded with `--bn fold`), by name.
    fn params(&self) -> Result<Params> {
        let vars = vm_params(&self.vm)?;
        match &self.folding {
            Some(f) => f.deploy(vars),
            None => Ok(vars),
        }
    }

    /// Optimizer steps per epoch.
    fn steps_per_epoch(&self, opts: &TrainOpts) -> usize {
        self.train.len().div_ceil(opts.batch_size)
    }
}

/// Checks the options that need no data; returns the batch-norm mode.
fn check_opts(opts: &TrainOpts) -> Result<BnMode> {
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
    if !(opts.momentum.is_finite() && opts.momentum >= 0.0) {
        return Err(CliError::Usage(format!(
            "--momentum {}: expected a finite value ≥ 0",
            opts.momentum
        )));
    }
    if opts.momentum != 0.0 && opts.optimizer != "sgd" {
        return Err(CliError::Usage(format!(
            "--momentum {} is SGD's: add --optimizer sgd (AdamW has its own moments)",
            opts.momentum
        )));
    }
    if !matches!(opts.schedule.as_str(), "cosine" | "step") {
        return Err(CliError::Usage(format!(
            "--schedule {}: expected cosine or step",
            opts.schedule
        )));
    }
    if opts.stop_after == Some(0) {
        return Err(CliError::Usage("--stop-after must be at least 1".into()));
    }
    BnMode::parse(&opts.bn)
}

fn setup(config: &QuantConfig, opts: &TrainOpts, bn: BnMode) -> Result<Setup> {
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
    let (model, mut vm, folding) = match bn {
        BnMode::Train => {
            let (model, vm) =
                FashionCnn::new_trainable(config, opts.seed, &dev).map_err(model_err)?;
            (model, vm, None)
        }
        BnMode::Fold => {
            let vm = VarMap::new();
            FashionCnn::init_varmap(&vm, opts.seed, &dev).map_err(model_err)?;
            let (model, folding) = Folding::build_fashion(&vm, config, &dev)?;
            (model, vm, Some(folding))
        }
    };
    if model.layers().observes() {
        return Err(CliError::Usage(
            "the config smooths (SmoothQuant `smoothing`) or runs `gptq`, post-training methods whose factors and weights come from `lowbit calibrate`; \
             quantization-aware training does not calibrate them: drop `smoothing` / `gptq` for `lowbit qat` / `lowbit pipeline`"
                .into(),
        ));
    }
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
        folding,
    })
}

fn evaluate(s: &Setup) -> Result<fashion::EvalStats> {
    fashion::evaluate(&s.model, s.test.batches(500, &s.dev).map_err(model_err)?).map_err(model_err)
}

/// The learning rate of step `step` (0-based, within the epoch) of epoch `epoch` (0-based).
fn lr_at(opts: &TrainOpts, steps_per_epoch: usize, epoch: usize, step: usize) -> f64 {
    if opts.schedule == "step" {
        opts.lr * opts.gamma.powi((epoch / opts.step_epochs.max(1)) as i32)
    } else {
        let total = (steps_per_epoch * opts.epochs).max(1) as f64;
        let t = (epoch * steps_per_epoch + step) as f64;
        opts.lr * 0.5 * (1.0 + (std::f64::consts::PI * t / total).cos())
    }
}

/// The variables the optimizer updates, by name (sorted): everything but the batch-norm
/// running statistics (as [`FashionCnn::trainable_vars`]).
fn named_vars(vm: &VarMap) -> Result<Vec<NamedVar>> {
    let data = vm
        .data()
        .lock()
        .map_err(|_| CliError::Other("the model's parameters are poisoned".into()))?;
    let mut named: Vec<NamedVar> = data
        .iter()
        .filter(|(k, _)| !k.ends_with(".running_mean") && !k.ends_with(".running_var"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(named)
}

fn make_optimizer(opts: &TrainOpts, vars: Vec<NamedVar>) -> Result<Opt> {
    Ok(match opts.optimizer.as_str() {
        "adamw" => Opt::AdamW(AdamW::named(
            vars,
            ParamsAdamW {
                lr: opts.lr,
                weight_decay: opts.weight_decay,
                ..Default::default()
            },
        )?),
        "sgd" => Opt::Sgd(Sgd::named(
            vars,
            SgdParams {
                lr: opts.lr,
                momentum: opts.momentum,
            },
        )),
        other => {
            return Err(CliError::Usage(format!(
                "--optimizer {other}: expected adamw or sgd"
            )));
        }
    })
}

/// Where training stands.
struct Progress {
    epochs_done: usize,
    rows: Vec<EpochRow>,
    best: f64,
    best_epoch: usize,
}

/// Trains `s.model` (in its current quantizer state) from epoch `p.epochs_done` up to epoch
/// `until` (of a schedule over `opts.epochs`); after every epoch saves
/// `checkpoint.safetensors` (and `best.safetensors` when the test top-1 improves) into `dir`,
/// then calls `after_epoch`.
fn train(
    s: &Setup,
    opts: &TrainOpts,
    dir: &Path,
    opt: &mut Opt,
    p: &mut Progress,
    until: usize,
    after_epoch: &mut dyn FnMut(&Setup, &Opt, &Progress) -> Result<()>,
) -> Result<()> {
    let steps = s.steps_per_epoch(opts);
    for epoch in p.epochs_done..until {
        let lr = |step: usize| lr_at(opts, steps, epoch, step);
        let batches = s
            .train
            .shuffled_batches(opts.batch_size, opts.seed + epoch as u64, &s.dev)
            .map_err(model_err)?;
        let st = match &mut *opt {
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
        if ev.accuracy > p.best {
            p.best = ev.accuracy;
            p.best_epoch = epoch + 1;
            FashionCnn::save(&s.vm, dir.join("best.safetensors")).map_err(model_err)?;
        }
        p.rows.push(row);
        p.epochs_done = epoch + 1;
        after_epoch(s, opt, p)?;
    }
    Ok(())
}

/// A weight scale made trainable.
struct Learned {
    /// The weight's name (`conv1.weight`).
    name: String,
    var: Var,
    init: Vec<f32>,
}

/// Turns every enabled weight quantizer's scale into a trainable tensor, initialised with the
/// weight's dynamic scales (of the folded weight with `--bn fold`).
fn learn_scales(s: &Setup) -> Result<Vec<Learned>> {
    let mut out = Vec::new();
    for p in quantized_params(&s.model, &s.params()?, false)? {
        let init = p.scales()?.values;
        let var = p.quantizer.enable_learned_scale(&init)?;
        out.push(Learned {
            name: p.name(),
            var,
            init,
        });
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

/// What `qat` trains from: a fresh start or a restored checkpoint.
struct Run {
    dir: PathBuf,
    learned: Vec<Learned>,
    fp32: f64,
    ptq: f64,
    progress: Progress,
    opt: Opt,
    /// Wall seconds of earlier invocations.
    earlier_seconds: f64,
    resumed_at: Vec<usize>,
}

/// A fresh run: learned scales, FP32 and PTQ accuracy, frozen scales, a new run directory.
fn start(s: &Setup, config_path: &Path, opts: &TrainOpts) -> Result<Run> {
    // Learned scales start at the dynamic scales (so the PTQ figure below is unchanged);
    // a spec that cannot learn its scale fails here, before anything is written.
    let learned = if opts.learned_scales {
        learn_scales(s)?
    } else {
        Vec::new()
    };
    let dir = timestamp_dir(&opts.out, &format!("qat-{}", config_label(config_path)));
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", dir.display())))?;
    std::fs::copy(config_path, dir.join("config.yaml"))
        .map_err(|e| CliError::Other(format!("cannot copy the config: {e}")))?;
    s.model.layers().set_mode(Mode::Fp32);
    let fp32 = evaluate(s)?.accuracy;
    s.model.layers().set_mode(Mode::Quantize);
    if opts.frozen_scales > 0 {
        calibrate(s, opts.batch_size, opts.frozen_scales)?;
        let path = dir.join("scales.json");
        s.model.layers().freeze()?.save(&path)?;
        // Train with the scales as written, so that a resume (which reads the file) goes on
        // with the same bits.
        s.model
            .layers()
            .load_scales(&lowbit_nn::StaticScales::load(&path)?)?;
        println!(
            "scales calibrated on {} batches and frozen for training",
            opts.frozen_scales
        );
    }
    let ptq = evaluate(s)?.accuracy;
    println!(
        "fp32 top-1 {:.2} %, PTQ top-1 {:.2} %; training on {} images",
        100.0 * fp32,
        100.0 * ptq,
        s.train.len()
    );
    let mut vars = named_vars(&s.vm)?;
    vars.extend(
        learned
            .iter()
            .map(|l| (format!("{}.learned_scale", l.name), l.var.clone())),
    );
    let opt = make_optimizer(opts, vars)?;
    Ok(Run {
        dir,
        learned,
        fp32,
        ptq,
        progress: Progress {
            epochs_done: 0,
            rows: Vec::new(),
            best: ptq,
            best_epoch: 0,
        },
        opt,
        earlier_seconds: 0.0,
        resumed_at: Vec::new(),
    })
}

/// `lowbit qat`.
pub fn qat(config_path: &Path, opts: &TrainOpts) -> Result<()> {
    let t0 = Instant::now();
    let config = QuantConfig::from_file(config_path)?;
    let bn = check_opts(opts)?;
    // A resume is checked against the run before any work.
    let resumed = match &opts.resume {
        Some(run_dir) => {
            let state = resume::load_state(run_dir)?;
            resume::check_resume(&state, run_dir, opts, &config, config_path)?;
            Some((run_dir.clone(), state))
        }
        None => None,
    };
    let s = setup(&config, opts, bn)?;
    let mut run = match resumed {
        Some((run_dir, state)) => resume::restore(&s, &run_dir, state, opts)?,
        None => start(&s, config_path, opts)?,
    };
    let config_json = resume::config_value(&config)?;
    let steps = s.steps_per_epoch(opts);
    let until = opts.stop_after.map_or(opts.epochs, |k| k.min(opts.epochs));
    let (dir, learned, fp32, ptq) = (&run.dir, &run.learned, run.fp32, run.ptq);
    let (earlier, resumed_at) = (run.earlier_seconds, &run.resumed_at);
    let mut after_epoch = |s: &Setup, opt: &Opt, p: &Progress| -> Result<()> {
        let state = RunState {
            schema_version: 1,
            model: opts.model.clone(),
            config_file: config_path.display().to_string(),
            epochs_done: p.epochs_done,
            planned_epochs: opts.epochs,
            fp32_top1: fp32,
            ptq_top1: ptq,
            best_top1: p.best,
            best_epoch: p.best_epoch,
            curves: p.rows.iter().map(EpochRow::exact).collect(),
            schedule: resume::ScheduleState {
                kind: opts.schedule.clone(),
                steps_per_epoch: steps,
                total_steps: steps * opts.epochs,
                steps_done: steps * p.epochs_done,
                next_lr: lr_at(opts, steps, p.epochs_done, 0),
            },
            data_order: resume::DataOrder {
                seed: opts.seed,
                next_epoch: p.epochs_done,
                rule: "epoch e (0-based) visits the training images in the order of a SplitMix64 Fisher-Yates shuffle seeded with seed + e".into(),
            },
            optimizer: resume::OptimizerInfo {
                kind: opt.kind().into(),
                steps: opt.steps(),
            },
            train_images: s.train.len(),
            test_images: s.test.len(),
            seconds: earlier + t0.elapsed().as_secs_f64(),
            resumed_at: resumed_at.clone(),
            options: resume::options_value(opts),
            config: config_json.clone(),
        };
        resume::save(
            dir,
            &resume::checkpoint_tensors(s, learned)?,
            &opt.export(),
            &state,
        )
    };
    train(
        &s,
        opts,
        dir,
        &mut run.opt,
        &mut run.progress,
        until,
        &mut after_epoch,
    )?;
    let p = &run.progress;
    let learned_summary = summarize_learned(learned)?;
    if let Some(l) = &learned_summary {
        println!(
            "learned scales: {} tensors, {} scales, smallest {:.3e}, mean |relative change| {:.2} %",
            l.tensors,
            l.scales,
            l.min_scale,
            100.0 * l.mean_abs_relative_change
        );
    }
    // The trained model as real low-bit tensors (folded with --bn fold), reloaded and
    // evaluated.
    let qdir = dir.join("quantized");
    let pairs = s
        .folding
        .as_ref()
        .map(|f| f.pairs.clone())
        .unwrap_or_default();
    let weight_bits = save_quantized(&s.model, &s.params()?, &qdir, &pairs)?;
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
        bn: opts.bn.clone(),
        train_images: s.train.len(),
        test_images: s.test.len(),
        fp32_top1: fp32,
        ptq_top1: ptq,
        planned_epochs: opts.epochs,
        epochs: p.rows.clone(),
        best_top1: p.best,
        best_epoch: p.best_epoch,
        quantized_weight_bits: weight_bits,
        quantized_checkpoint_top1: reloaded_top1,
        learned_scales: learned_summary,
        resumed_at: resumed_at.clone(),
        seconds: earlier + t0.elapsed().as_secs_f64(),
    };
    write_json(&dir.join("qat.json"), &report)?;
    write_curves_html(
        &dir.join("report.html"),
        &format!("QAT of fashion_cnn with {}", config_path.display()),
        ptq,
        &report.epochs,
        &format!(
            "FP32 top-1 {:.2} %, PTQ {:.2} %, best {:.2} % (epoch {}); {} training images per epoch; batch norm: {}",
            100.0 * fp32,
            100.0 * ptq,
            100.0 * p.best,
            p.best_epoch,
            report.train_images,
            opts.bn
        ),
    )?;
    if p.epochs_done < opts.epochs {
        println!(
            "stopped after epoch {} of {}; continue with: lowbit qat -c {} <the same options> --resume {}",
            p.epochs_done,
            opts.epochs,
            config_path.display(),
            dir.display()
        );
    }
    println!(
        "best top-1 {:.2} % (epoch {}); run: {}",
        100.0 * p.best,
        p.best_epoch,
        dir.display()
    );
    Ok(())
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
