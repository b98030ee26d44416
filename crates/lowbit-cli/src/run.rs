//! `lowbit run`, `lowbit sweep` and `lowbit calibrate`.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use lowbit_eval::{
    Evaluator, RunMeta, RunReport, SummaryRow, Variant, format_table, read_finished, write_run_dir,
    write_summary,
};
use lowbit_nn::{QuantConfig, StaticScales};

use crate::EvalOpts;
use crate::embed;
use crate::error::{CliError, Result};
use crate::models::{self, Dataset, ModelSource};
use crate::presets;

/// A named config.
pub struct NamedConfig {
    /// Name in reports.
    pub name: String,
    /// The config.
    pub config: QuantConfig,
    /// Static scales calibrated for it (`lowbit calibrate` writes them next to the config file
    /// as `<config>.scales.json`), loaded into every model built from it.
    pub scales: Option<StaticScales>,
}

impl NamedConfig {
    /// A model of `source` under this config, with its calibrated scales.
    fn build(
        &self,
        source: &dyn models::ModelSource,
        dev: &candle_core::Device,
    ) -> Result<Box<dyn lowbit_nn::QuantModel>> {
        let m = source.build(&self.config, dev)?;
        self.load_scales(m.layers())?;
        Ok(m)
    }

    /// Loads the calibrated scales (if any) into a model's layers.
    pub(crate) fn load_scales(&self, layers: &lowbit_nn::LayerTable) -> Result<()> {
        if let Some(s) = &self.scales {
            layers
                .load_scales(s)
                .map_err(|e| CliError::Other(format!("config `{}`: {e}", self.name)))?;
        }
        Ok(())
    }
}

pub(crate) fn timestamp() -> String {
    let s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((s / 86_400) as i64, s % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn pool(threads: Option<usize>) -> Result<rayon::ThreadPool> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(t) = threads {
        if t == 0 {
            return Err(CliError::Usage("--threads must be at least 1".into()));
        }
        b = b.num_threads(t);
    }
    b.build().map_err(|e| CliError::Other(e.to_string()))
}

/// Config files → named configs (name: file stem).
fn load_configs(paths: &[PathBuf]) -> Result<Vec<NamedConfig>> {
    paths
        .iter()
        .map(|p| {
            let config = QuantConfig::from_file(p)?;
            let name = p
                .file_stem()
                .map_or("config".to_string(), |s| s.to_string_lossy().to_string());
            let scales_file = StaticScales::path_for_config(p);
            let scales = if scales_file.is_file() {
                Some(StaticScales::load(&scales_file)?)
            } else {
                None
            };
            Ok(NamedConfig {
                name,
                config,
                scales,
            })
        })
        .collect()
}

fn preset_configs(names: &[String]) -> Result<Vec<NamedConfig>> {
    names
        .iter()
        .map(|n| {
            let config = presets::config_for(n)
                .map_err(|e| CliError::Usage(format!("--formats: `{n}`: {e}")))?;
            Ok(NamedConfig {
                name: n.clone(),
                config,
                scales: None,
            })
        })
        .collect()
}

struct Progress {
    bar: ProgressBar,
    plain: bool,
    total: u64,
    label: String,
}

impl Progress {
    fn new(total: u64, label: &str) -> Progress {
        let plain = !crate::interactive();
        let bar = if plain {
            ProgressBar::hidden()
        } else {
            let b = ProgressBar::new(total);
            if let Ok(s) = ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} batches {elapsed_precise} eta {eta}",
            ) {
                b.set_style(s.progress_chars("=> "));
            }
            b.set_message(label.to_string());
            b
        };
        Progress {
            bar,
            plain,
            total,
            label: label.to_string(),
        }
    }
    fn inc(&self, done: u64) {
        self.bar.inc(1);
        let step = (self.total / 10).max(1);
        if self.plain && (done.is_multiple_of(step) || done == self.total) {
            println!("{}: batch {done}/{}", self.label, self.total);
        }
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The batches `(start, len)` of an evaluation of `n` samples: the first `layer_samples` (the
/// ones that get per-layer statistics) in batches of at most `batch`, then the rest in batches
/// of `batch`. `layer_samples` 0 (every sample) or ≥ `n` gives plain batches of `batch`.
fn batch_spans(n: usize, batch: usize, layer_samples: usize) -> Vec<(usize, usize)> {
    let cut = if layer_samples == 0 {
        n
    } else {
        layer_samples.min(n)
    };
    let mut spans = Vec::new();
    for (from, to) in [(0, cut), (cut, n)] {
        let mut s = from;
        while s < to {
            let len = batch.min(to - s);
            spans.push((s, len));
            s += len;
        }
    }
    spans
}

/// Evaluates `configs` on one model; returns the reports (in config order).
fn evaluate(
    source: &dyn ModelSource,
    data: &Dataset,
    configs: &[NamedConfig],
    opts: &EvalOpts,
) -> Result<Vec<RunReport>> {
    let batch_size = opts
        .batch_size
        .unwrap_or_else(|| source.default_batch_size());
    if batch_size == 0 {
        return Err(CliError::Usage("--batch-size must be at least 1".into()));
    }
    let dev = models::device(&opts.device)?;
    let reference = source.build(&QuantConfig::default(), &dev)?;
    let mut variants = Vec::new();
    let mut sens_of: Vec<Vec<(String, usize)>> = Vec::new();
    for c in configs {
        variants.push(Variant {
            name: c.name.clone(),
            model: c.build(source, &dev)?,
            detail: true,
        });
    }
    for c in configs {
        let mut rows = Vec::new();
        if opts.sensitivity {
            let probe = c.build(source, &dev)?;
            let quantized: Vec<String> = probe
                .layers()
                .layers()
                .iter()
                .filter(|l| l.op.quant().quantizers().any(|q| q.is_enabled()))
                .map(|l| l.name.clone())
                .collect();
            for layer in quantized {
                let m = c.build(source, &dev)?;
                for l in m.layers().layers() {
                    if l.name != layer {
                        l.op.quant().set_enabled(false);
                    }
                }
                rows.push((layer.clone(), variants.len()));
                variants.push(Variant {
                    name: format!("{}@{layer}", c.name),
                    model: m,
                    detail: false,
                });
            }
        }
        sens_of.push(rows);
    }
    let mut ev = Evaluator::new(reference, variants);
    let n = data.len();
    let spans = batch_spans(n, batch_size, opts.layer_samples);
    ev.set_layer_batches(match opts.layer_samples {
        0 => None,
        l if l >= n => None,
        l => Some(l.div_ceil(batch_size) as u64),
    });
    let progress = Progress::new(
        spans.len() as u64,
        &format!("{} × {} configs", source.name(), configs.len()),
    );
    for (done, &(start, len)) in spans.iter().enumerate() {
        let (x, labels) = data.batch(start, len, &dev)?;
        ev.add_batch(&x, labels)?;
        progress.inc(done as u64 + 1);
    }
    progress.finish();
    let results = ev.finish();
    let meta = RunMeta {
        model: source.name().to_string(),
        data: data.description.clone(),
        batch_size,
        seed: opts.seed,
    };
    Ok(configs
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let sens: Vec<(String, lowbit_eval::VariantResult)> = sens_of[i]
                .iter()
                .map(|(layer, k)| (layer.clone(), results.variants[*k].clone()))
                .collect();
            RunReport::new(&meta, results.fp32, &results.variants[i], &sens)
        })
        .collect())
}

fn shout_violations(reports: &[RunReport]) {
    for r in reports.iter().filter(|r| !r.compliance.passed) {
        eprintln!(
            "\n!!! COMPLIANCE VIOLATIONS: model {} config {}: {} off-grid values and {} bad scales in layers {} !!!",
            r.model,
            r.config,
            r.compliance.totals.off_grid,
            r.compliance.totals.bad_scales,
            r.compliance.layers_with_violations.join(", ")
        );
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Evaluates `configs` on the model named `model` (its data from `data` or its default): the
/// reports in config order and a description of the data.
fn evaluate_model(
    model: &str,
    checkpoint: Option<&Path>,
    data: Option<&Path>,
    configs: &[NamedConfig],
    opts: &EvalOpts,
    pool: &rayon::ThreadPool,
) -> Result<(Vec<RunReport>, String)> {
    if model == embed::MODEL {
        if checkpoint.is_some() {
            return Err(CliError::Usage(
                "--checkpoint: minilm reads its weights from the fetched assets (scripts/fetch-assets.sh minilm)".into(),
            ));
        }
        let progress = Progress::new(
            configs.len() as u64 + 1,
            &format!("{model}: FP32 + {} configs", configs.len()),
        );
        let r = pool.install(|| embed::evaluate(configs, data, opts, &|d| progress.inc(d)))?;
        progress.finish();
        return Ok((r.reports, r.description));
    }
    let source = models::model(model, checkpoint)?;
    let dataset = source.data(data, opts.limit, opts.seed)?;
    let reports = pool.install(|| evaluate(source.as_ref(), &dataset, configs, opts))?;
    Ok((reports, dataset.description))
}

/// The FP32 row of the table of `model`, from one of its reports.
fn fp32_row(model: &str, r: &RunReport) -> SummaryRow {
    match &r.embedding {
        Some(e) => SummaryRow::fp32_embedding(model, r.fp32.samples, &e.fp32),
        None => SummaryRow::fp32(model, &r.fp32),
    }
}

/// `lowbit run`.
pub fn run(
    config_files: &[PathBuf],
    model: &str,
    checkpoint: Option<&Path>,
    data: Option<&Path>,
    formats: &[String],
    out: &Path,
    opts: &EvalOpts,
) -> Result<()> {
    let t0 = Instant::now();
    let configs = if !config_files.is_empty() {
        if !formats.is_empty() {
            return Err(CliError::Usage(
                "give either -c/--config or --formats, not both".into(),
            ));
        }
        load_configs(config_files)?
    } else if !formats.is_empty() {
        preset_configs(formats)?
    } else {
        let names: Vec<String> = presets::DEFAULT_SWEEP
            .iter()
            .map(|s| s.to_string())
            .collect();
        preset_configs(&names)?
    };
    let pool = pool(opts.threads)?;
    let (reports, description) = evaluate_model(model, checkpoint, data, &configs, opts, &pool)?;
    let label = if configs.len() == 1 {
        sanitize(&configs[0].name)
    } else if config_files.is_empty() && formats.is_empty() {
        "default".to_string()
    } else {
        format!("{}configs", configs.len())
    };
    let dir = out.join(format!("{}-{}-{label}", timestamp(), sanitize(model)));
    let mut rows = vec![fp32_row(model, &reports[0])];
    for (r, c) in reports.iter().zip(&configs) {
        let sub = sanitize(&c.name);
        write_run_dir(&dir.join(&sub), r, &c.config.to_yaml()?)?;
        rows.push(r.summary_row(&sub));
    }
    write_summary(&dir, &rows, &reports)?;
    println!(
        "\nmodel {model}, {} samples ({}), {:.1} s; per-layer SQNR and activation compliance on the first {} samples (--layer-samples)\n",
        reports[0].fp32.samples,
        description,
        t0.elapsed().as_secs_f64(),
        reports[0].layer_samples
    );
    print!("{}", format_table(&rows));
    shout_violations(&reports);
    println!("\nreports: {}", dir.display());
    Ok(())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelsFile {
    models: Vec<ModelEntry>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum ModelEntry {
    Name(String),
    Full {
        name: String,
        #[serde(default)]
        data: Option<PathBuf>,
        #[serde(default)]
        checkpoint: Option<PathBuf>,
    },
}

/// `lowbit sweep`: every config × every model, skipping finished runs.
pub fn sweep(
    configs_dir: &Path,
    models_file: &Path,
    out: &Path,
    max_runs: Option<usize>,
    opts: &EvalOpts,
) -> Result<()> {
    let text = std::fs::read_to_string(models_file)
        .map_err(|e| CliError::Usage(format!("{}: cannot read: {e}", models_file.display())))?;
    let mf: ModelsFile = serde_yaml_ng::from_str(&text).map_err(|e| {
        CliError::Config(format!(
            "{}{}: {e}",
            models_file.display(),
            e.location()
                .map(|l| format!(":{}", l.line()))
                .unwrap_or_default()
        ))
    })?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(configs_dir)
        .map_err(|e| CliError::Usage(format!("{}: {e}", configs_dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(CliError::Usage(format!(
            "{}: no *.yaml configs",
            configs_dir.display()
        )));
    }
    let configs = load_configs(&files)?;
    let pool = pool(opts.threads)?;
    let mut budget = max_runs.unwrap_or(usize::MAX);
    let mut rows = Vec::new();
    let mut reports = Vec::new();
    let mut complete = true;
    for entry in &mf.models {
        let (name, data, checkpoint) = match entry {
            ModelEntry::Name(n) => (n.clone(), None, None),
            ModelEntry::Full {
                name,
                data,
                checkpoint,
            } => (name.clone(), data.clone(), checkpoint.clone()),
        };
        let mdir = out.join(sanitize(&name));
        let mut todo = Vec::new();
        let mut have = Vec::new();
        for c in &configs {
            let d = mdir.join(sanitize(&c.name));
            match read_finished(&d) {
                Some(r) => {
                    println!("{name}/{}: finished earlier, skipped", c.name);
                    have.push(r);
                }
                None if budget > 0 => {
                    budget -= 1;
                    todo.push(NamedConfig {
                        name: c.name.clone(),
                        config: c.config.clone(),
                        scales: c.scales.clone(),
                    });
                }
                None => complete = false,
            }
        }
        if !todo.is_empty() {
            let (new, _) = evaluate_model(
                &name,
                checkpoint.as_deref(),
                data.as_deref(),
                &todo,
                opts,
                &pool,
            )?;
            for (r, c) in new.into_iter().zip(&todo) {
                let d = mdir.join(sanitize(&c.name));
                write_run_dir(&d, &r, &c.config.to_yaml()?)?;
                // Numbers as a resumed run reads them back (JSON round trip).
                have.push(read_finished(&d).unwrap_or(r));
            }
        }
        // Config order, whatever was resumed.
        have.sort_by_key(|r| configs.iter().position(|c| c.name == r.config));
        if let Some(first) = have.first() {
            rows.push(fp32_row(&name, first));
        }
        for r in &have {
            rows.push(r.summary_row(&format!("{}/{}", sanitize(&name), sanitize(&r.config))));
        }
        reports.extend(have);
    }
    if !complete {
        println!(
            "stopped after {} new runs (--max-runs); run again to resume",
            max_runs.unwrap_or(0)
        );
        return Ok(());
    }
    write_summary(out, &rows, &reports)?;
    print!("{}", format_table(&rows));
    shout_violations(&reports);
    println!("\nsummary: {}", out.join("summary.md").display());
    Ok(())
}

/// What `lowbit calibrate` takes.
pub struct CalibrateArgs<'a> {
    /// The config file.
    pub config: &'a Path,
    /// The model name.
    pub model: &'a str,
    /// Its weights, for models that take them.
    pub checkpoint: Option<&'a Path>,
    /// Batches to observe.
    pub batches: usize,
    /// Samples per batch.
    pub batch_size: usize,
    /// Data location.
    pub data: Option<&'a Path>,
    /// Seed (synthetic data).
    pub seed: u64,
    /// How the static scales are chosen (`max`, `percentile:99.99`, …).
    pub method: &'a str,
}

/// `lowbit calibrate`: observe `batches` batches, freeze, save the scales next to the config.
/// Layers that smooth (SmoothQuant) get their factors from a first pass over the same batches
/// in FP32; the quantizers then calibrate on the smoothed tensors.
pub fn calibrate(a: CalibrateArgs<'_>) -> Result<()> {
    let CalibrateArgs {
        config,
        model,
        checkpoint,
        batches,
        batch_size,
        data,
        seed,
        method,
    } = a;
    let a_method = method;
    let method: lowbit_quant::Method = method
        .parse()
        .map_err(|e: lowbit_quant::QuantError| CliError::Usage(format!("--method: {e}")))?;
    let cfg = QuantConfig::from_file(config)?;
    let n = batches.saturating_mul(batch_size);
    let (scales, samples) = if model == embed::MODEL {
        if checkpoint.is_some() {
            return Err(CliError::Usage(
                "--checkpoint: minilm reads its weights from the fetched assets (scripts/fetch-assets.sh minilm)".into(),
            ));
        }
        embed::calibrate(&cfg, data, n, batch_size, method)?
    } else {
        let source = models::model(model, checkpoint)?;
        let m = source.build(&cfg, &candle_core::Device::Cpu)?;
        let dataset = source.data(data, Some(n), seed)?;
        let pass = || -> Result<()> {
            let mut start = 0;
            while start < dataset.len() {
                let (x, _) = dataset.batch(start, batch_size, &candle_core::Device::Cpu)?;
                m.forward(&x)?;
                start += batch_size;
            }
            Ok(())
        };
        (calibrate_layers(m.layers(), &pass, method)?, dataset.len())
    };
    let path = StaticScales::path_for_config(config);
    scales.save(&path)?;
    println!(
        "calibrated {} quantizers of {} layers on {} samples ({}): {}",
        scales.layers.values().map(|r| r.len()).sum::<usize>(),
        scales.layers.len(),
        samples,
        a_method,
        path.display()
    );
    Ok(())
}

/// Calibrates a model's layers on the batches `pass` runs: smoothing factors and GPTQ weights
/// first when some layer needs them (an FP32 pass), then the `mode: static` quantizers with
/// `method`.
pub(crate) fn calibrate_layers(
    layers: &lowbit_nn::LayerTable,
    pass: &dyn Fn() -> Result<()>,
    method: lowbit_quant::Method,
) -> Result<StaticScales> {
    let observes = layers.observes();
    if observes {
        let o = layers.observe(pass)?;
        if !o.smoothing.is_empty() {
            println!("smoothing factors of {} layers", o.smoothing.len());
        }
        if !o.gptq.is_empty() {
            println!("GPTQ weights of {} layers", o.gptq.len());
        }
    }
    // The `mode: static` quantizers; dynamic ones stay dynamic, as the config says. A config
    // that declares none and has nothing else to calibrate (no smoothing, no GPTQ) is
    // calibrated whole: every activation quantizer is frozen (what `lowbit calibrate` did
    // before it read the modes).
    let activations = layers.layers().iter().any(|l| {
        l.op.quant()
            .quantizers()
            .any(|q| q.is_activation() && q.is_enabled())
    });
    if layers.begin_static_calibration(method)? > 0 {
        pass()?;
    } else if activations && !observes {
        println!("no `mode: static` quantizer in the config: freezing every activation quantizer");
        layers.begin_calibration(method)?;
        pass()?;
    }
    Ok(layers.freeze()?)
}

#[cfg(test)]
mod tests {
    use super::batch_spans;

    #[test]
    fn batch_spans_cut_the_layer_samples_first() {
        assert_eq!(
            batch_spans(1200, 500, 100),
            [(0, 100), (100, 500), (600, 500), (1100, 100)]
        );
        assert_eq!(
            batch_spans(1200, 500, 0),
            [(0, 500), (500, 500), (1000, 200)]
        );
        assert_eq!(batch_spans(300, 500, 1000), [(0, 300)]);
        assert_eq!(
            batch_spans(1000, 300, 700),
            [(0, 300), (300, 300), (600, 100), (700, 300)]
        );
        assert!(batch_spans(0, 500, 100).is_empty());
    }
}
