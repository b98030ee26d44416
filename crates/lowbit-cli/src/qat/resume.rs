//! What `lowbit qat` writes after every epoch so that `--resume RUN_DIR` continues bit for bit,
//! the checks that a resume fits the run, and the restore itself.
//!
//! `RUN_DIR/checkpoint/`, each file written atomically (a temporary file renamed over it), in
//! this order:
//!
//! - `last.safetensors`: every model variable (batch-norm running statistics included) and,
//!   with learned scales, `<layer>.weight.learned_scale` and `<layer>.weight.learned_scale_init`;
//!   metadata `epoch`;
//! - `optimizer.safetensors`: the optimizer's state by variable name (`<var>.exp_avg`,
//!   `<var>.exp_avg_sq` for AdamW, `<var>.momentum_buffer` for SGD with momentum); metadata
//!   `optimizer`, `step`, `epoch`;
//! - `state.json` (last, so a complete one marks a complete checkpoint): epochs done, best
//!   top-1 and epoch, the curves so far, the learning-rate schedule position, the data-order
//!   seed and next epoch, the optimizer's kind and step count, the resolved options and the
//!   resolved config. Floats that feed the results are written as strings (Rust's shortest
//!   round-trip form) so they come back bit for bit.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use lowbit_nn::{Mode, QuantConfig, QuantModel};

use super::{EpochRow, Learned, Progress, Run, Setup, TrainOpts, make_optimizer, named_vars};
use crate::error::{CliError, Result};
use crate::quantized_checkpoint::{quantized_params, vm_params};

/// The checkpoint folder inside a run directory.
pub(crate) const DIR: &str = "checkpoint";
/// The model variables.
pub(crate) const LAST: &str = "last.safetensors";
/// The optimizer state.
pub(crate) const OPTIMIZER: &str = "optimizer.safetensors";
/// The run state.
pub(crate) const STATE: &str = "state.json";

/// Serde for floats that must come back bit for bit: written as a string (shortest
/// round-trip form), read from a string or a number.
mod exact {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{x:?}"))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        S(String),
        N(f64),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Either::deserialize(d)? {
            Either::S(s) => s.parse().map_err(serde::de::Error::custom),
            Either::N(x) => Ok(x),
        }
    }
}

/// One epoch of the curve, exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StateRow {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    #[serde(with = "exact")]
    pub train_loss: f64,
    /// Mean test loss.
    #[serde(with = "exact")]
    pub test_loss: f64,
    /// Test top-1.
    #[serde(with = "exact")]
    pub test_top1: f64,
    /// Training seconds.
    #[serde(with = "exact")]
    pub seconds: f64,
}

/// Where the learning-rate schedule stands.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ScheduleState {
    /// `cosine` or `step`.
    pub kind: String,
    /// Optimizer steps per epoch.
    pub steps_per_epoch: usize,
    /// Steps the schedule spans (`cosine`: to 0 at the end of `--epochs`).
    pub total_steps: usize,
    /// Steps done.
    pub steps_done: usize,
    /// The learning rate of the next step.
    #[serde(with = "exact")]
    pub next_lr: f64,
}

/// The data order: epoch `e` (0-based) visits the training images in the order of
/// `shuffled_batches(batch_size, seed + e)` (SplitMix64 Fisher–Yates), so the seed and the
/// next epoch are the whole generator state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DataOrder {
    /// `--seed`.
    pub seed: u64,
    /// The next epoch (0-based): its order is seeded with `seed + next_epoch`.
    pub next_epoch: usize,
    /// How the order follows from them.
    pub rule: String,
}

/// The optimizer's kind and step count (its tensors are in `optimizer.safetensors`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct OptimizerInfo {
    /// `adamw` or `sgd`.
    pub kind: String,
    /// Steps taken.
    pub steps: usize,
}

/// `checkpoint/state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RunState {
    /// Format version.
    pub schema_version: u32,
    /// The model.
    pub model: String,
    /// The config file the run was started with.
    pub config_file: String,
    /// Epochs done.
    pub epochs_done: usize,
    /// `--epochs` of the last invocation (the schedule's length).
    pub planned_epochs: usize,
    /// FP32 test top-1 of the initial weights.
    #[serde(with = "exact")]
    pub fp32_top1: f64,
    /// Test top-1 before training, quantizers on.
    #[serde(with = "exact")]
    pub ptq_top1: f64,
    /// Best test top-1 so far.
    #[serde(with = "exact")]
    pub best_top1: f64,
    /// Its epoch (0: none beat PTQ).
    pub best_epoch: usize,
    /// The curve so far.
    pub curves: Vec<StateRow>,
    /// The learning-rate schedule.
    pub schedule: ScheduleState,
    /// The data order.
    pub data_order: DataOrder,
    /// The optimizer.
    pub optimizer: OptimizerInfo,
    /// Training images per epoch.
    pub train_images: usize,
    /// Test images.
    pub test_images: usize,
    /// Wall seconds of the invocations so far.
    #[serde(with = "exact")]
    pub seconds: f64,
    /// The epochs after which the run was resumed.
    pub resumed_at: Vec<usize>,
    /// The resolved training options (what a resume must repeat).
    pub options: Value,
    /// The resolved config.
    pub config: Value,
}

/// The checkpoint folder of `run_dir`.
pub(crate) fn dir(run_dir: &Path) -> PathBuf {
    run_dir.join(DIR)
}

fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::Other(format!("{}: {what}: {e}", path.display()))
}

/// Writes F32 `tensors` with `meta` as safetensors at `path`, atomically.
pub(crate) fn write_tensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    meta: HashMap<String, String>,
) -> Result<()> {
    let mut bytes = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let v = t
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        bytes.push((name.as_str(), t.dims().to_vec(), b));
    }
    let views = bytes
        .iter()
        .map(|(n, shape, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .map(|v| (*n, v))
                .map_err(|e| io_err(path, &format!("tensor `{n}`"), e))
        })
        .collect::<Result<Vec<_>>>()?;
    let data = safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| io_err(path, "cannot serialize", e))?;
    Ok(lowbit_eval::write_atomic(path, &data)?)
}

/// Reads an F32 safetensors file written by [`write_tensors`]: its tensors and metadata.
pub(crate) fn read_tensors(
    path: &Path,
) -> Result<(BTreeMap<String, Tensor>, HashMap<String, String>)> {
    let data = std::fs::read(path).map_err(|e| io_err(path, "cannot read", e))?;
    let st = safetensors::SafeTensors::deserialize(&data)
        .map_err(|e| io_err(path, "not a safetensors file", e))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&data)
        .map_err(|e| io_err(path, "not a safetensors file", e))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(io_err(
                path,
                &format!("tensor `{name}`"),
                format!("dtype {:?}, expected F32", view.dtype()),
            ));
        }
        let v: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(
            name.clone(),
            Tensor::from_vec(v, view.shape(), &Device::Cpu)?,
        );
    }
    Ok((out, meta))
}

/// Reads metadata `key` of `file` as a number.
pub(crate) fn meta_usize(meta: &HashMap<String, String>, key: &str, file: &Path) -> Result<usize> {
    meta.get(key).and_then(|v| v.parse().ok()).ok_or_else(|| {
        CliError::Other(format!(
            "{}: metadata `{key}` is missing or not a number (not a lowbit qat checkpoint?)",
            file.display()
        ))
    })
}

/// Writes the checkpoint of `state`: the variables, the optimizer state, then `state.json`.
pub(crate) fn save(
    run_dir: &Path,
    vars: &BTreeMap<String, Tensor>,
    optimizer: &BTreeMap<String, Tensor>,
    state: &RunState,
) -> Result<()> {
    let d = dir(run_dir);
    std::fs::create_dir_all(&d).map_err(|e| io_err(&d, "cannot create", e))?;
    let epoch = state.epochs_done.to_string();
    write_tensors(
        &d.join(LAST),
        vars,
        HashMap::from([("epoch".to_string(), epoch.clone())]),
    )?;
    write_tensors(
        &d.join(OPTIMIZER),
        optimizer,
        HashMap::from([
            ("epoch".to_string(), epoch),
            ("optimizer".to_string(), state.optimizer.kind.clone()),
            ("step".to_string(), state.optimizer.steps.to_string()),
        ]),
    )?;
    let text = serde_json::to_string_pretty(state).map_err(|e| CliError::Other(e.to_string()))?;
    Ok(lowbit_eval::write_atomic(&d.join(STATE), text.as_bytes())?)
}

/// Reads `RUN_DIR/checkpoint/state.json`.
pub(crate) fn load_state(run_dir: &Path) -> Result<RunState> {
    let path = dir(run_dir).join(STATE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        CliError::Usage(format!(
            "--resume {}: cannot read {}: {e} (a run directory of `lowbit qat` has checkpoint/state.json after its first epoch)",
            run_dir.display(),
            path.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| CliError::Other(format!("{}: {e}", path.display())))
}

/// A JSON value through text and back (so values compare as they would after a save).
pub(crate) fn round_trip(v: &Value) -> Result<Value> {
    let text = serde_json::to_string(v).map_err(|e| CliError::Other(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| CliError::Other(e.to_string()))
}

/// The first place where `a` and `b` differ: (path, a there, b there).
pub(crate) fn first_difference(
    path: &str,
    a: &Value,
    b: &Value,
) -> Option<(String, String, String)> {
    let show = |v: Option<&Value>| v.map_or_else(|| "absent".to_string(), Value::to_string);
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => {
                        if let Some(d) = first_difference(&p, u, v) {
                            return Some(d);
                        }
                    }
                    (u, v) => return Some((p, show(u), show(v))),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| first_difference(&format!("{path}[{i}]"), u, v)),
        _ if a == b => None,
        _ => Some((path.to_string(), a.to_string(), b.to_string())),
    }
}

// ---------------------------------------------------------------------------------------
// Restoring a run (`lowbit qat --resume`).

/// The training options a resume must repeat, as JSON (floats as exact strings).
pub(super) fn options_value(opts: &TrainOpts) -> serde_json::Value {
    let exact = |x: f64| serde_json::Value::String(format!("{x:?}"));
    serde_json::json!({
        "model": opts.model,
        "optimizer": opts.optimizer,
        "lr": exact(opts.lr),
        "weight_decay": exact(opts.weight_decay),
        "momentum": exact(opts.momentum),
        "schedule": opts.schedule,
        "step_epochs": opts.step_epochs,
        "gamma": exact(opts.gamma),
        "batch_size": opts.batch_size,
        "seed": opts.seed,
        "limit": opts.limit,
        "test_limit": opts.test_limit,
        "train_on_test": opts.train_on_test,
        "frozen_scales": opts.frozen_scales,
        "learned_scales": opts.learned_scales,
        "bn": opts.bn,
    })
}

/// The resolved config as JSON (what a resume must repeat).
pub(super) fn config_value(config: &QuantConfig) -> Result<serde_json::Value> {
    serde_json::to_value(config).map_err(|e| CliError::Other(format!("the config: {e}")))
}

/// Checks, before any work, that `--resume` fits the run of `state`: the same model, options
/// and config, and epochs left to train.
pub(super) fn check_resume(
    state: &RunState,
    run_dir: &Path,
    opts: &TrainOpts,
    config: &QuantConfig,
    config_path: &Path,
) -> Result<()> {
    let file = dir(run_dir).join(STATE);
    let f = file.display();
    if state.model != opts.model {
        return Err(CliError::Usage(format!(
            "{f}: field `model` is {:?} in the run, {:?} on this command line",
            state.model, opts.model
        )));
    }
    let ours = round_trip(&options_value(opts))?;
    if let Some((path, run, now)) = first_difference("options", &round_trip(&state.options)?, &ours)
    {
        return Err(CliError::Usage(format!(
            "{f}: field `{path}` is {run} in the run, {now} on this command line (--resume takes the run's options and config; only --epochs and --stop-after may change)"
        )));
    }
    let ours = round_trip(&config_value(config)?)?;
    if let Some((path, run, now)) = first_difference("config", &round_trip(&state.config)?, &ours) {
        return Err(CliError::Usage(format!(
            "{f}: field `{path}` is {run} in the run's config ({}), {now} in {}",
            state.config_file,
            config_path.display()
        )));
    }
    let last = opts.stop_after.map_or(opts.epochs, |k| k.min(opts.epochs));
    if last <= state.epochs_done {
        return Err(CliError::Usage(format!(
            "--resume {}: the run has done {} epochs; --epochs {}{} leaves nothing to train",
            run_dir.display(),
            state.epochs_done,
            opts.epochs,
            opts.stop_after
                .map(|k| format!(" --stop-after {k}"))
                .unwrap_or_default()
        )));
    }
    Ok(())
}

/// The learned scales of a checkpoint (`<weight>.learned_scale`, `…_init` in `file`),
/// installed into the weight quantizers.
fn restore_learned(
    s: &Setup,
    tensors: &BTreeMap<String, Tensor>,
    file: &Path,
) -> Result<Vec<Learned>> {
    let mut out = Vec::new();
    for p in quantized_params(&s.model, &s.params()?, false)? {
        let name = p.name();
        let get = |suffix: &str| -> Result<Vec<f32>> {
            let key = format!("{name}.{suffix}");
            let t = tensors.get(&key).ok_or_else(|| {
                CliError::Other(format!(
                    "{}: tensor `{key}` is missing (the run learned no scale for `{name}`)",
                    file.display()
                ))
            })?;
            Ok(t.flatten_all()?.to_vec1::<f32>()?)
        };
        let (now, init) = (get("learned_scale")?, get("learned_scale_init")?);
        let var = p
            .quantizer
            .enable_learned_scale(&now)
            .map_err(|e| CliError::Other(format!("{}: `{name}`: {e}", file.display())))?;
        out.push(Learned { name, var, init });
    }
    Ok(out)
}

/// Restores the run in `run_dir` from its checkpoint (`state` read and checked already):
/// weights, learned and frozen scales, optimizer state, curves.
pub(super) fn restore(s: &Setup, run_dir: &Path, state: RunState, opts: &TrainOpts) -> Result<Run> {
    let cdir = dir(run_dir);
    let state_file = cdir.join(STATE);
    if state.train_images != s.train.len()
        || state.schedule.steps_per_epoch != s.steps_per_epoch(opts)
    {
        return Err(CliError::Usage(format!(
            "{}: field `train_images` is {} in the run ({} steps per epoch), {} now ({} steps): the training data differ",
            state_file.display(),
            state.train_images,
            state.schedule.steps_per_epoch,
            s.train.len(),
            s.steps_per_epoch(opts)
        )));
    }
    let epoch_of = |meta: &std::collections::HashMap<String, String>, file: &Path| -> Result<()> {
        let e = meta_usize(meta, "epoch", file)?;
        if e != state.epochs_done {
            return Err(CliError::Other(format!(
                "{}: metadata `epoch` is {e}, but {} says {} epochs are done (an interrupted checkpoint write?)",
                file.display(),
                state_file.display(),
                state.epochs_done
            )));
        }
        Ok(())
    };
    // The model's variables.
    let last = cdir.join(LAST);
    let (tensors, meta) = read_tensors(&last)?;
    epoch_of(&meta, &last)?;
    {
        let data =
            s.vm.data()
                .lock()
                .map_err(|_| CliError::Other("the model's parameters are poisoned".into()))?;
        for (name, var) in data.iter() {
            let t = tensors.get(name).ok_or_else(|| {
                CliError::Other(format!(
                    "{}: tensor `{name}` is missing (a checkpoint of another model?)",
                    last.display()
                ))
            })?;
            if t.dims() != var.dims() {
                return Err(CliError::Other(format!(
                    "{}: tensor `{name}` has shape {:?}, the model's has {:?}",
                    last.display(),
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(t)?;
        }
        let learned_key = |k: &str| {
            opts.learned_scales
                && (k.ends_with(".learned_scale") || k.ends_with(".learned_scale_init"))
        };
        if let Some(k) = tensors
            .keys()
            .find(|k| !data.contains_key(*k) && !learned_key(k))
        {
            return Err(CliError::Other(format!(
                "{}: tensor `{k}` belongs to no variable of this model",
                last.display()
            )));
        }
    }
    s.model.context().invalidate();
    let learned = if opts.learned_scales {
        restore_learned(s, &tensors, &last)?
    } else {
        Vec::new()
    };
    s.model.layers().set_mode(Mode::Quantize);
    if opts.frozen_scales > 0 {
        let path = run_dir.join("scales.json");
        s.model
            .layers()
            .load_scales(&lowbit_nn::StaticScales::load(&path)?)?;
    }
    // The optimizer.
    let mut vars = named_vars(&s.vm)?;
    vars.extend(
        learned
            .iter()
            .map(|l| (format!("{}.learned_scale", l.name), l.var.clone())),
    );
    let mut opt = make_optimizer(opts, vars)?;
    let ofile = cdir.join(OPTIMIZER);
    let (ot, ometa) = read_tensors(&ofile)?;
    epoch_of(&ometa, &ofile)?;
    let kind = ometa.get("optimizer").map(String::as_str).unwrap_or("");
    if kind != opt.kind() {
        return Err(CliError::Other(format!(
            "{}: metadata `optimizer` is {kind:?}, this run uses {}",
            ofile.display(),
            opt.kind()
        )));
    }
    let steps = meta_usize(&ometa, "step", &ofile)?;
    if steps != state.optimizer.steps {
        return Err(CliError::Other(format!(
            "{}: metadata `step` is {steps}, {} says {}",
            ofile.display(),
            state_file.display(),
            state.optimizer.steps
        )));
    }
    opt.import(steps, &ot)
        .map_err(|e| CliError::Other(format!("{}: {e}", ofile.display())))?;
    if opts.schedule == "cosine" && opts.epochs != state.planned_epochs {
        println!(
            "note: the cosine schedule now spans {} epochs (the run planned {}): the learning rate follows the new curve from here",
            opts.epochs, state.planned_epochs
        );
    }
    println!(
        "resuming {} after epoch {} ({} steps), best top-1 {:.2} % (epoch {})",
        run_dir.display(),
        state.epochs_done,
        steps,
        100.0 * state.best_top1,
        state.best_epoch
    );
    let mut resumed_at = state.resumed_at.clone();
    resumed_at.push(state.epochs_done);
    Ok(Run {
        dir: run_dir.to_path_buf(),
        learned,
        fp32: state.fp32_top1,
        ptq: state.ptq_top1,
        progress: Progress {
            epochs_done: state.epochs_done,
            rows: state.curves.iter().map(EpochRow::from_exact).collect(),
            best: state.best_top1,
            best_epoch: state.best_epoch,
        },
        opt,
        earlier_seconds: state.seconds,
        resumed_at,
    })
}

/// The variables a checkpoint holds: the model's and the learned scales (now and initial).
pub(super) fn checkpoint_tensors(
    s: &Setup,
    learned: &[Learned],
) -> Result<BTreeMap<String, Tensor>> {
    let mut out = vm_params(&s.vm)?;
    for l in learned {
        out.insert(
            format!("{}.learned_scale", l.name),
            l.var.as_tensor().clone(),
        );
        out.insert(
            format!("{}.learned_scale_init", l.name),
            Tensor::from_slice(&l.init, l.init.len(), &s.dev)?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn floats_survive_state_json_bit_for_bit() {
        // Values whose shortest decimal form has 17 digits.
        for x in [
            0.1 + 0.2,
            1.0 / 3.0,
            0.30000000000000004,
            2.220446049250313e-16,
            0.4213,
        ] {
            let row = StateRow {
                epoch: 1,
                train_loss: x,
                test_loss: x * 7.0,
                test_top1: x / 9.0,
                seconds: 0.0,
            };
            let back: StateRow =
                serde_json::from_str(&serde_json::to_string(&row).unwrap()).unwrap();
            assert_eq!(back.train_loss.to_bits(), x.to_bits());
            assert_eq!(back.test_loss.to_bits(), (x * 7.0).to_bits());
            assert_eq!(back.test_top1.to_bits(), (x / 9.0).to_bits());
        }
    }

    #[test]
    fn tensors_and_metadata_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("t.safetensors");
        let t = Tensor::from_vec(
            vec![1.5f32, -0.0, f32::MIN_POSITIVE, 3.0e-41],
            (2, 2),
            &Device::Cpu,
        )
        .unwrap();
        let tensors = BTreeMap::from([("a.b".to_string(), t)]);
        write_tensors(
            &path,
            &tensors,
            HashMap::from([("epoch".into(), "3".into())]),
        )
        .unwrap();
        let (back, meta) = read_tensors(&path).unwrap();
        assert_eq!(meta_usize(&meta, "epoch", &path).unwrap(), 3);
        let bits = |t: &Tensor| {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .into_iter()
                .map(f32::to_bits)
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&back["a.b"]), bits(&tensors["a.b"]));
        assert_eq!(back["a.b"].dims(), &[2, 2]);
        let e = meta_usize(&meta, "step", &path).unwrap_err().to_string();
        assert!(e.contains("t.safetensors") && e.contains("`step`"), "{e}");
    }

    #[test]
    fn first_difference_names_the_path() {
        let a: Value = serde_json::json!({"defaults": {"weight": {"format": "int4"}}, "x": [1, 2]});
        let b: Value = serde_json::json!({"defaults": {"weight": {"format": "int2"}}, "x": [1, 2]});
        assert_eq!(
            first_difference("config", &a, &b),
            Some((
                "config.defaults.weight.format".into(),
                "\"int4\"".into(),
                "\"int2\"".into()
            ))
        );
        assert_eq!(first_difference("config", &a, &a), None);
        let c: Value = serde_json::json!({"defaults": {"weight": {"format": "int4"}}});
        assert_eq!(
            first_difference("config", &a, &c).map(|d| d.0),
            Some("config.x".into())
        );
    }
}
