//! How many bits does the adder of an FP8 MAC array need? The embedded Fashion-MNIST ResNet
//! with FP8 (E4M3) weights and inputs, its convolutions and linear layer accumulating in
//! `e5mY` (FP16's exponent, `Y` fraction bits), truncated like a cheap adder, with and without
//! FP32 promotion every 32 products; top-1 on the first test images beside FP32 and an f32
//! accumulator. A template for sweeping any accumulator parameter through the library API:
//! the configs are ordinary `QuantConfig`s, built here from YAML text.
//!
//! ```text
//! cargo run --release --example accumulator_width                  # 300 images
//! cargo run --release --example accumulator_width -- --limit 1000 --widths 3,5,7,10
//! ```

use std::error::Error;

use candle_core::Device;
use clap::Parser;
use lowbit::models::data::FashionMnist;
use lowbit::models::{FashionCnn, fashion};
use lowbit::nn::QuantConfig;

#[derive(Parser)]
#[command(about = "Top-1 of the Fashion-MNIST ResNet against the accumulator's fraction bits")]
struct Args {
    /// Test images (from the committed split).
    #[arg(long, default_value_t = 300)]
    limit: usize,
    /// Fraction bits of the `e5mY` accumulators to try (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "3,4,6,8,10")]
    widths: Vec<u32>,
    /// Products per FP32 promotion in the promoted runs.
    #[arg(long, default_value_t = 32)]
    chunk: usize,
}

/// Top-1 accuracy (%) of the model under `yaml`.
fn top1(yaml: &str, test: &FashionMnist) -> Result<f64, Box<dyn Error>> {
    let config = QuantConfig::from_yaml(yaml, "accumulator_width")?;
    let model = FashionCnn::load_default(&config, &Device::Cpu)?;
    let stats = fashion::evaluate(&model, test.batches(100, &Device::Cpu)?)?;
    Ok(100.0 * stats.accuracy)
}

/// The config: FP8 weights and inputs, batch norm (folded at inference) in FP32, and the
/// given accumulator (`None`: the f32 matmul).
fn config(accumulator: Option<&str>) -> String {
    let acc = accumulator.map_or(String::new(), |a| format!(", accumulator: {a}"));
    format!(
        "defaults: {{ weight: fp8_e4m3, input: fp8_e4m3{acc} }}\n\
         ops: {{ batch_norm2d: {{ weight: null, bias: null }} }}\n"
    )
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let test = FashionMnist::committed_test(Some(args.limit))?;
    println!("{} test images; FP8 E4M3 weights and inputs\n", test.len());
    println!("{:<34} top-1 %", "accumulator");
    println!("{:<34} {:6.2}", "none (FP32 model)", top1("{}", &test)?);
    println!("{:<34} {:6.2}", "f32", top1(&config(None), &test)?);
    for &y in &args.widths {
        for chunk in [None, Some(args.chunk)] {
            let (setting, label) = match chunk {
                None => (
                    format!("{{ format: e5m{y}, rounding: toward_zero }}"),
                    format!("e5m{y} truncated"),
                ),
                Some(c) => (
                    format!("{{ format: e5m{y}, rounding: toward_zero, chunk: {c} }}"),
                    format!("e5m{y} truncated, FP32 every {c}"),
                ),
            };
            println!("{label:<34} {:6.2}", top1(&config(Some(&setting)), &test)?);
        }
    }
    Ok(())
}
