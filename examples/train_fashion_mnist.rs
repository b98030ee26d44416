//! Trains the embedded Fashion-MNIST ResNet (`lowbit::models::FashionCnn`) with candle's
//! autograd and AdamW, evaluates it on the test split after every epoch, and saves the
//! weights (torchvision names) as safetensors — the file committed at
//! `crates/lowbit-models/weights/fashion_cnn.safetensors`.
//!
//! ```text
//! scripts/fetch-fashion-mnist.sh                      # the training split (once)
//! cargo run --release --example train_fashion_mnist   # 8 epochs, seed 0
//! cargo run --release --example train_fashion_mnist -- --epochs 1 --limit 5000 --out /tmp/w.safetensors
//! ```
//!
//! With `--config FILE` (a lowbit QuantConfig) the quantizers are in the loop: the forward
//! pass fake-quantizes as configured and gradients pass through the straight-through
//! estimator — quantization-aware training from `--init` weights; the test accuracy of the
//! quantized model is printed before the first epoch (post-training quantization) and after
//! every epoch:
//!
//! ```text
//! cargo run --release --example train_fashion_mnist -- --config configs/qat/w4a8_int4.yaml \
//!     --init crates/lowbit-models/weights/fashion_cnn.safetensors --epochs 1 --lr 5e-4 --out /tmp/qat.safetensors
//! ```
//!
//! The training split is shuffled by `--seed` every epoch (seed + epoch) and the weights are
//! initialised from it, so a run is reproducible up to floating-point summation order. The
//! learning rate follows a cosine from `--lr` down to 0 over all steps, after a one-epoch-tenth
//! linear warm-up.
//!
//! `--device cuda` trains on the GPU (a build with `--features cuda`; the fake-quant ops run
//! the CUDA kernels of docs/cuda.md, with the CPU's bits).

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use clap::Parser;
use lowbit::models::data::{self, FashionMnist, Split};
use lowbit::models::{FashionCnn, fashion};
use lowbit::nn::QuantConfig;

#[derive(Parser)]
#[command(about = "Train the Fashion-MNIST ResNet of lowbit-models and save its weights")]
struct Args {
    /// Epochs over the training split.
    #[arg(long, default_value_t = 8)]
    epochs: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 1e-2)]
    weight_decay: f64,
    /// Seed of the initial weights and of the shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory with train-{images,labels}-*.gz (from scripts/fetch-fashion-mnist.sh).
    #[arg(long, default_value = data::ASSETS_DIR)]
    data_dir: PathBuf,
    /// Directory with the t10k-*.gz test split (default: the committed one).
    #[arg(long)]
    test_dir: Option<PathBuf>,
    /// Use only the first N training images.
    #[arg(long)]
    limit: Option<usize>,
    /// Start from these weights (a file this example saved) instead of a fresh initialisation.
    #[arg(long)]
    init: Option<PathBuf>,
    /// A quantization config: train with its quantizers in the loop (QAT).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The device: cpu, cuda (GPU 0) or cuda:N (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Where to save the weights (after every epoch).
    #[arg(long, default_value_os_t = lowbit::models::fashion::weights_path())]
    out: PathBuf,
}

/// Errors print with their message (`Display`), not as a debug dump.
fn main() -> std::process::ExitCode {
    // Candle's CPU kernels: activations served from the heap, the thread count read once.
    lowbit::nn::process::keep_freed_memory();
    // SAFETY: the start of `main`, before any other thread exists.
    unsafe { lowbit::nn::process::pin_thread_count(None) };
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let dev = lowbit::nn::parse_device(&args.device)?;
    let train = FashionMnist::load(&args.data_dir, Split::Train, args.limit)?;
    let test_dir = args.test_dir.clone().unwrap_or_else(data::committed_dir);
    let test = FashionMnist::load(&test_dir, Split::Test, None)?;
    println!(
        "training on {} images, testing on {}, {} threads",
        train.len(),
        test.len(),
        candle_core::utils::get_num_threads()
    );

    let config = match &args.config {
        Some(p) => QuantConfig::from_file(p)?,
        None => QuantConfig::default(),
    };
    let (model, mut vm) = FashionCnn::new_trainable(&config, args.seed, &dev)?;
    if let Some(init) = &args.init {
        vm.load(init)?;
        println!("starting from {}", init.display());
    }
    if let Some(p) = &args.config {
        let ev = fashion::evaluate(&model, test.batches(500, &dev)?)?;
        println!(
            "quantization-aware training with {}: before training (PTQ) test top-1 {:.4}",
            p.display(),
            ev.accuracy
        );
    }
    let params: usize = FashionCnn::tensor_specs()?
        .iter()
        .map(|s| s.shape.iter().product::<usize>())
        .sum();
    println!("{params} parameters (running statistics included)");
    let mut opt = AdamW::new(
        FashionCnn::trainable_vars(&vm)?,
        ParamsAdamW {
            lr: args.lr,
            weight_decay: args.weight_decay,
            ..Default::default()
        },
    )?;

    let steps_per_epoch = train.len().div_ceil(args.batch_size);
    let total = (steps_per_epoch * args.epochs).max(1) as f64;
    let warmup = (steps_per_epoch as f64 / 10.0).max(1.0);
    let start = Instant::now();
    for epoch in 0..args.epochs {
        let offset = epoch * steps_per_epoch;
        let lr = |step: usize| {
            let t = (offset + step) as f64;
            let cos = 0.5 * (1.0 + (std::f64::consts::PI * t / total).cos());
            args.lr * cos * (t / warmup).clamp(0.05, 1.0)
        };
        let batches = train.shuffled_batches(args.batch_size, args.seed + epoch as u64, &dev)?;
        let st = fashion::train_epoch(&model, &mut opt, batches, &lr)?;
        let t0 = Instant::now();
        let ev = fashion::evaluate(&model, test.batches(500, &dev)?)?;
        println!(
            "epoch {:>2}: train loss {:.4}  test loss {:.4}  test top-1 {:.4} ({}/{})  train {:.1} s  eval {:.1} s",
            epoch + 1,
            st.mean_loss,
            ev.mean_loss,
            ev.accuracy,
            ev.correct,
            ev.images,
            st.seconds,
            t0.elapsed().as_secs_f64()
        );
        FashionCnn::save(&vm, &args.out)?;
    }
    println!(
        "saved {} after {:.1} s",
        args.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
