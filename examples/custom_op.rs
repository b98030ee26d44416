//! Registers a user-defined op in lowbit's registry and quantizes it like a built-in.
//!
//! The op, `scaled_tanh` (`y = k·tanh(x)`), only implements `compute` (the FP32 math) and
//! `quant`; the trait's default `forward` quantizes its input and output with whatever the
//! config gives the op kind or the layer name, and records taps. Run:
//!
//! ```text
//! cargo run --example custom_op
//! ```

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use lowbit::nn::{
    LayerQuant, Mode, NnError, OpClass, OpParams, QBuilder, QuantConfig, QuantOp, Registry,
};

/// `y = k · tanh(x)`.
#[derive(Debug)]
struct ScaledTanh {
    k: f64,
    quant: LayerQuant,
}

impl QuantOp for ScaledTanh {
    fn quant(&self) -> &LayerQuant {
        &self.quant
    }
    fn compute(&self, inputs: &[Tensor]) -> lowbit::nn::Result<Tensor> {
        Ok(inputs[0].tanh()?.affine(self.k, 0.0)?)
    }
}

/// Errors print with their message (`Display`), not as a debug dump.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    // 1. Register the op kind, exactly as the built-ins are registered.
    let mut registry = Registry::default();
    registry.register_fn("scaled_tanh", OpClass::Activation, |params, _vb, quant| {
        let OpParams::Custom(any) = params else {
            return Err(NnError::layer(
                &quant.name,
                "scaled_tanh takes OpParams::Custom(f64)",
            ));
        };
        let k = *any
            .downcast_ref::<f64>()
            .ok_or_else(|| NnError::layer(&quant.name, "expected an f64 factor"))?;
        Ok(Arc::new(ScaledTanh { k, quant }))
    });

    // 2. The config addresses it by op kind (or by layer name), like any op.
    let config = QuantConfig::from_yaml(
        "ops:\n  scaled_tanh: { input: fp8_e4m3, output: mxfp4 }\n",
        "inline.yaml",
    )?;
    let b = QBuilder::new(
        VarBuilder::zeros(DType::F32, &Device::Cpu),
        &config,
        registry,
    )?;
    let op = b.op(
        "scaled_tanh",
        "head.squash",
        OpParams::Custom(Arc::new(3.0f64)),
    )?;
    let table = b.finish()?;
    print!("{}", table.explain());

    // 3. Run it quantized and in FP32.
    let x = Tensor::arange(-16f32, 16.0, &Device::Cpu)?
        .affine(0.1, 0.0)?
        .reshape((1, 32))?;
    let yq = op.forward1(&x)?;
    table.set_mode(Mode::Fp32);
    let y = op.forward1(&x)?;
    let (yq, y) = (
        yq.flatten_all()?.to_vec1::<f32>()?,
        y.flatten_all()?.to_vec1::<f32>()?,
    );
    println!("{:>8} {:>10} {:>10}", "x", "fp32", "quantized");
    for i in (0..32).step_by(4) {
        println!(
            "{:>8.2} {:>10.5} {:>10.5}",
            -1.6 + 0.1 * i as f32,
            y[i],
            yq[i]
        );
    }
    Ok(())
}
