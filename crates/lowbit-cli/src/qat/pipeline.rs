//! `lowbit pipeline`: (1) PTQ of weights and biases, (2) weight-only QAT, (3) calibration of
//! inputs and outputs, then `hardware_report.json` (every quantized tensor's scales as the
//! hardware applies them).

use std::path::Path;

use lowbit_models::FashionCnn;
use lowbit_nn::{Mode, QuantConfig, QuantModel, Quantizer};
use lowbit_quant::{ScaleKind, shift_report};
use serde::Serialize;

use super::{
    EpochRow, Progress, Setup, TrainOpts, calibrate, check_opts, config_label, evaluate,
    make_optimizer, named_vars, setup, timestamp_dir, train, write_curves_html, write_json,
};
use crate::error::{CliError, Result};
use crate::quantized_checkpoint::quantized_params;

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
    /// Batch norm: `train`, or `fold` (the convolutions' entries are the folded ones).
    pub bn: String,
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
    let params = s.params()?;
    let params = quantized_params(&s.model, &params, true)?;
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

/// `lowbit pipeline`.
pub fn pipeline(config_path: &Path, opts: &TrainOpts, calib_batches: usize) -> Result<()> {
    let config = QuantConfig::from_file(config_path)?;
    let bn = check_opts(opts)?;
    if opts.resume.is_some() || opts.stop_after.is_some() {
        return Err(CliError::Usage(
            "--resume and --stop-after are `lowbit qat` options (the pipeline runs in one go)"
                .into(),
        ));
    }
    let mut s = setup(&config, opts, bn)?;
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
    let mut opt = make_optimizer(opts, named_vars(&s.vm)?)?;
    let mut progress = Progress {
        epochs_done: 0,
        rows: Vec::new(),
        best: ptq,
        best_epoch: 0,
    };
    train(
        &s,
        opts,
        &dir,
        &mut opt,
        &mut progress,
        opts.epochs,
        &mut |_, _, _| Ok(()),
    )?;
    let Progress {
        rows: epochs,
        best,
        best_epoch,
        ..
    } = progress;
    if best_epoch > 0 {
        s.vm.load(dir.join("best.safetensors"))
            .map_err(|e| CliError::Other(format!("cannot reload the best weights: {e}")))?;
        s.model.context().invalidate();
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
        bn: opts.bn.clone(),
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
