//! The default sweep: one config per format family, weights and inputs quantized.
//!
//! Blocks run along axis 1 for weights and inputs alike: the input-channel (reduction) axis of
//! conv weights `[out, in, kh, kw]` and linear weights `[out, in]`, and the channel / feature
//! axis of activations `[N, C, H, W]` and `[N, F]`, which is where hardware groups MX and
//! NVFP4 blocks. Batch-norm scales stay FP32 (hardware folds them into the conv).

use lowbit_formats::Format;
use lowbit_nn::{QuantConfig, RoleSettings, Setting};
use lowbit_quant::{Granularity, QuantSpec, Result};

/// The default sweep's config names, in table order.
pub const DEFAULT_SWEEP: &[&str] = &[
    "fp8_e4m3",
    "fp8_e5m2",
    "int8",
    "fp6_e2m3",
    "fp4_e2m1",
    "int4_g128",
    "mxfp8_e4m3",
    "mxfp6_e3m2",
    "mxfp4",
    "nvfp4",
    "fp8_e4m3_chunk128_po2",
];

fn axis1(preset: &str, size: usize) -> Result<QuantSpec> {
    QuantSpec::preset(preset)?
        .to_builder()
        .granularity(Granularity::PerBlock { axis: 1, size })
        .build()
}

/// (weight, input) specs of a default config name (any preset name works too: the preset for
/// both, blocks moved to axis 1).
pub fn specs_for(name: &str) -> Result<(QuantSpec, QuantSpec)> {
    let per_channel = |f: Format| {
        QuantSpec::builder(f)
            .granularity(Granularity::PerChannel { axis: 0 })
            .build()
    };
    let per_tensor = |f: Format| QuantSpec::builder(f).build();
    Ok(match name {
        "int8" => (QuantSpec::preset("int8")?, per_tensor(Format::INT8)?),
        "fp6_e2m3" => (per_channel(Format::E2M3)?, per_tensor(Format::E2M3)?),
        "fp4_e2m1" => (per_channel(Format::E2M1)?, per_tensor(Format::E2M1)?),
        "int4_g128" | "fp8_e4m3_chunk128_po2" => {
            let s = axis1(name, 128)?;
            (s, s)
        }
        "nvfp4" => {
            let s = axis1(name, 16)?;
            (s, s)
        }
        n if n.starts_with("mx") => {
            let s = axis1(n, 32)?;
            (s, s)
        }
        n => {
            let s = QuantSpec::preset(n)?;
            (s, s)
        }
    })
}

/// The config of a default sweep entry (or of a preset given with `--formats`).
pub fn config_for(name: &str) -> Result<QuantConfig> {
    let (w, i) = specs_for(name)?;
    let mut c = QuantConfig::weights_and_inputs(w, i);
    // Normalisation parameters stay FP32 (as deployments keep them; blocks along axis 1 do not
    // exist on their 1-D weights); their inputs are quantized like every other op's.
    for kind in ["batch_norm2d", "layer_norm"] {
        c.ops.insert(
            kind.to_string(),
            RoleSettings {
                weight: Setting::Off,
                bias: Setting::Off,
                ..RoleSettings::default()
            },
        );
    }
    Ok(c)
}
