//! `lowbit`: evaluate quantized models against FP32 (accuracy, layer-wise error, compliance,
//! compression, sensitivity), sweep configs × models, and inspect formats, configs and
//! checkpoints. `lowbit run` with no arguments is the default sweep on the default model.

mod embed;
mod error;
mod formats;
mod image_models;
mod models;
mod presets;
mod qat;
mod quantized_checkpoint;
mod run;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::{CliError, Result};

/// Bit-exact low-precision formats on real networks.
#[derive(Parser, Debug)]
#[command(name = "lowbit", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Options shared by `run` and `sweep`.
#[derive(clap::Args, Debug, Clone)]
pub struct EvalOpts {
    /// Evaluate on N samples only: the first N (ImageFolder sets: N spread over the classes,
    /// default 1000; minilm: the first N pairs of each word set and N Lee documents).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Samples per batch (default: 500; image models at 224×224: 32).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Worker threads (results do not depend on it).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed (synthetic data; recorded in reports).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also quantize one layer at a time and rank layers by the accuracy they cost.
    #[arg(long)]
    pub sensitivity: bool,
    /// Per-layer statistics (SQNR, isolated error, activation compliance) on the first N
    /// samples only (in batches of at most --batch-size); 0 = every sample. Top-1/top-5,
    /// certainty and the output comparison always cover every sample; weights are checked once.
    #[arg(long, default_value_t = 100)]
    pub layer_samples: usize,
    /// Where the model runs: `cpu`, `cuda` (GPU 0) or `cuda:N` (a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Evaluate a model under FP32 and one or more configs; print the table, write reports.
    Run {
        /// Config file(s) (YAML); default: the built-in sweep over every format family.
        #[arg(short, long)]
        config: Vec<PathBuf>,
        /// Model name (fashion_cnn, tiny_mlp, efficientnet_lite0, resnet18, resnet34, resnet50,
        /// resnet101, resnet152, vit_b16).
        #[arg(long, default_value = models::DEFAULT_MODEL)]
        model: String,
        /// Weights (safetensors) of a model that takes them: required for resnet* (a torchvision
        /// state dict) and vit_b16 (timm's), optional for efficientnet_lite0 (docs/models.md).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Data location (default: the model's committed data; image models: an ImageFolder).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Preset names to sweep instead (weights and inputs), e.g. fp8_e4m3,mxfp4.
        #[arg(long, value_delimiter = ',')]
        formats: Vec<String>,
        /// Parent folder of the run directory.
        #[arg(long, default_value = "runs")]
        out: PathBuf,
        #[command(flatten)]
        opts: EvalOpts,
    },
    /// Every config of a folder × every model of a models file; resumable.
    Sweep {
        /// Folder of config files (*.yaml).
        #[arg(long)]
        configs: PathBuf,
        /// YAML file: `models: [fashion_cnn, tiny_mlp]`; an entry may also be
        /// `{name: resnet50, checkpoint: FILE, data: DIR}`.
        #[arg(long)]
        models: PathBuf,
        /// Output folder (runs in `<out>/<model>/<config>/`, summaries at the top).
        #[arg(long, default_value = "runs/sweep")]
        out: PathBuf,
        /// Stop after this many newly finished runs (to test resuming).
        #[arg(long, hide = true)]
        max_runs: Option<usize>,
        #[command(flatten)]
        opts: EvalOpts,
    },
    /// The table of number formats: the named ones, or any given (e.g. `e3m4 float8_e4m3b11fnuz
    /// int4_full bfloat16`); with `--values` their value tables, with `--cast` what numbers become.
    Formats {
        /// Format names (default: the named formats).
        names: Vec<String>,
        /// Also print each format's sorted finite values.
        #[arg(long)]
        values: bool,
        /// Numbers to convert (comma-separated, e.g. `--cast 300,500,-0.1`): the code and value
        /// under the reference conversion (ml_dtypes' astype) and saturated.
        #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
        cast: Vec<f32>,
    },
    /// Which spec each layer of a model gets under a config.
    Explain {
        /// Config file.
        #[arg(short, long)]
        config: PathBuf,
        /// Model name.
        #[arg(long, default_value = models::DEFAULT_MODEL)]
        model: String,
        /// Weights of a model that takes them (optional here: image models' layers do not
        /// depend on them, ResNet/ViT then have 1000 classes).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Names, dtypes, shapes and parameter count of a safetensors checkpoint.
    Inspect {
        /// The checkpoint.
        checkpoint: PathBuf,
    },
    /// Static scales for a model and config from N batches, saved next to the config.
    Calibrate {
        /// Config file.
        #[arg(short, long)]
        config: PathBuf,
        /// Model name.
        #[arg(long, default_value = models::DEFAULT_MODEL)]
        model: String,
        /// Weights of a model that takes them (see `run --checkpoint`).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Batches to observe.
        #[arg(long, default_value_t = 4)]
        batches: usize,
        /// Samples per batch.
        #[arg(long, default_value_t = 256)]
        batch_size: usize,
        /// Data location.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// How the static scales are chosen: max, minmax, ema:C, percentile:P (e.g.
        /// percentile:99.99), mse, entropy (TensorRT's KL)
        #[arg(long, default_value = "max")]
        method: String,
    },
    /// Quantization-aware training of fashion_cnn with a config's quantizers in the loop
    /// (STE), from the committed FP32 weights: PTQ and per-epoch test top-1, checkpoints,
    /// qat.json.
    Qat {
        /// Config file.
        #[arg(short, long)]
        config: PathBuf,
        #[command(flatten)]
        opts: qat::TrainOpts,
    },
    /// PTQ of weights and biases → weight-only QAT → calibration of inputs and outputs, with
    /// every step's accuracy and a hardware report (scales as 2^(-k) and `x >> k`).
    Pipeline {
        /// Config file.
        #[arg(short, long)]
        config: PathBuf,
        /// Training batches observed to calibrate inputs and outputs (step 3).
        #[arg(long, default_value_t = 8)]
        calib_batches: usize,
        #[command(flatten)]
        opts: qat::TrainOpts,
    },
    /// Writes the default sweep's configs as YAML files into a folder.
    #[command(hide = true)]
    WriteDefaultConfigs {
        /// The folder.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    lowbit_nn::process::keep_freed_memory();
    let cli = Cli::parse();
    let threads = match &cli.cmd {
        Cmd::Run { opts, .. } | Cmd::Sweep { opts, .. } => opts.threads,
        _ => None,
    };
    // SAFETY: the start of `main`, before any other thread exists (clap spawns none).
    unsafe { lowbit_nn::process::pin_thread_count(threads) };
    match dispatch(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn dispatch(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Run {
            config,
            model,
            checkpoint,
            data,
            formats,
            out,
            opts,
        } => run::run(
            &config,
            &model,
            checkpoint.as_deref(),
            data.as_deref(),
            &formats,
            &out,
            &opts,
        ),
        Cmd::Sweep {
            configs,
            models,
            out,
            max_runs,
            opts,
        } => run::sweep(&configs, &models, &out, max_runs, &opts),
        Cmd::Qat { config, opts } => qat::qat(&config, &opts),
        Cmd::Pipeline {
            config,
            calib_batches,
            opts,
        } => qat::pipeline(&config, &opts, calib_batches),
        Cmd::Formats {
            names,
            values,
            cast,
        } => {
            print!("{}", formats::formats(&names, values, &cast)?);
            Ok(())
        }
        Cmd::Explain {
            config,
            model,
            checkpoint,
        } => {
            let cfg = lowbit_nn::QuantConfig::from_file(&config)?;
            print!("{}", models::explain(&model, checkpoint.as_deref(), &cfg)?);
            Ok(())
        }
        Cmd::Inspect { checkpoint } => inspect(&checkpoint),
        Cmd::Calibrate {
            config,
            model,
            checkpoint,
            batches,
            batch_size,
            data,
            seed,
            method,
        } => run::calibrate(run::CalibrateArgs {
            config: &config,
            model: &model,
            checkpoint: checkpoint.as_deref(),
            batches,
            batch_size,
            data: data.as_deref(),
            seed,
            method: &method,
        }),
        Cmd::WriteDefaultConfigs { dir } => {
            std::fs::create_dir_all(&dir).map_err(|e| CliError::Other(e.to_string()))?;
            for name in presets::DEFAULT_SWEEP {
                let c = presets::config_for(name)?;
                let text = format!(
                    "# Default sweep entry `{name}`: weights and inputs quantized (see docs/config.md).\n{}",
                    c.to_yaml()?
                );
                let p = dir.join(format!("{name}.yaml"));
                std::fs::write(&p, text)
                    .map_err(|e| CliError::Other(format!("{}: {e}", p.display())))?;
            }
            Ok(())
        }
    }
}

fn inspect(path: &std::path::Path) -> Result<()> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::Usage(format!("{}: cannot read: {e}", path.display())))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| CliError::Other(format!("{}: not a safetensors file: {e}", path.display())))?;
    let mut names = st.names();
    names.sort();
    let w = names.iter().map(|n| n.len()).max().unwrap_or(4).max(4);
    println!(
        "{:w$}  {:6}  {:16}  {:>10}",
        "name", "dtype", "shape", "params"
    );
    let mut total = 0usize;
    for n in names {
        let t = st
            .tensor(n)
            .map_err(|e| CliError::Other(format!("{n}: {e}")))?;
        let count: usize = t.shape().iter().product();
        total += count;
        println!(
            "{:w$}  {:6}  {:16}  {:>10}",
            n,
            format!("{:?}", t.dtype()),
            format!("{:?}", t.shape()),
            count
        );
    }
    println!("{} tensors, {total} parameters", st.len());
    Ok(())
}

/// Whether stdout is a terminal (progress bars) or not (plain lines).
pub fn interactive() -> bool {
    std::io::stdout().is_terminal()
}
