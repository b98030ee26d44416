//! # lowbit-nn
//!
//! Quantized neural-network layers on Candle. Every layer holds its FP32 parameters and
//! optional quantizers for its weight, bias, input and output, chosen per layer by one
//! [`QuantConfig`] and built through a [`Registry`] of ops that users extend with their own.
//! With every quantizer off a layer is candle's layer, bit for bit.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use lowbit_nn::{Mode, QBuilder, QuantConfig, Registry};
//!
//! let config = QuantConfig::from_yaml("defaults: { weight: int8, input: fp8_e4m3 }", "inline")?;
//! let vm = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
//! let b = QBuilder::new(vb, &config, Registry::default())?;
//! let fc = b.linear("fc", 16, 4)?;
//! let model = b.finish()?;
//! let x = Tensor::randn(0f32, 1.0, (2, 16), &Device::Cpu)?;
//! let yq = fc.forward1(&x)?;
//! model.set_mode(Mode::Fp32);
//! let y = fc.forward1(&x)?;
//! assert_eq!(y.dims(), yq.dims());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Map
//!
//! - [`FakeQuant`], [`Ste`], [`ElementQuant`] (`fake_quant.rs`): the Candle ops and the
//!   straight-through backward.
//! - [`LsqFakeQuant`] (`lsq.rs`): fake-quant with a learned (trainable) scale (LSQ).
//! - [`matmul_accumulated`], [`linear_accumulated`], [`conv2d_accumulated`],
//!   [`AccumulatedMatmul`] (`accumulate.rs`): matmuls and convolutions whose sums run in a
//!   narrow accumulator (a config's `accumulator`).
//! - [`kernel_plan`]: what the GPU does for one op (kernels, buffers, arguments), as data;
//!   `cuda.rs` + `kernels/*.cu` (feature `cuda`) run it: the same ops on the GPU, bit for bit;
//!   the tests also run it through the host emulator `kernels/emulator/` (docs/cuda.md).
//! - [`Quantizer`], [`Role`] (`quantizer.rs`): one role of one layer: spec, calibration, mode.
//! - [`QuantOp`], [`LayerQuant`] (`op.rs`): the trait every quantized op implements;
//!   `op/observe.rs`: a layer's FP32 observation pass (smoothing factors, GPTQ weights).
//! - [`Registry`], [`OpFactory`], [`OpParams`] (`registry.rs`): op kind → implementation.
//! - [`QBuilder`], [`LayerTable`], [`QuantModel`] (`builder.rs`): builds models by layer name.
//! - [`StaticScales`] (`calibration.rs`): calibrate → freeze → save/load scales.
//! - [`QuantConfig`] (`config.rs`): the YAML config and its resolution rules.
//! - [`Rotation`] (`rotation.rs`): block-Hadamard rotation of a linear layer's input and
//!   weight, or of a matmul's operands, before quantization (a config's `rotation`).
//! - [`Smoothing`] (`smoothing.rs`): SmoothQuant's calibrated per-channel factors moving a
//!   linear layer's activation outliers into its weight (a config's `smoothing`).
//! - [`Gptq`] (`gptq.rs`): GPTQ of a linear layer's weight from its calibration inputs (a
//!   config's `gptq`; one-shot or sequential, [`LayerTable::observe`]).
//! - [`ModelContext`], [`Mode`], [`TapRecord`] (`context.rs`): mode, training flag, taps.
//! - [`layers`]: the built-in layers, and the CPU convolution kernels `QConv2d` runs
//!   ([`layers::TiledConv2d`], [`layers::DepthwiseConv2d`]: candle's bits, 3–10× faster, with
//!   their own backward).
//! - [`parse_device`] (`device.rs`): `cpu`, `cuda`, `cuda:N`.
//! - [`process`]: process settings for fast CPU runs (allocator, thread count), for `main`.
//! - [`NnError`] (`error.rs`).

#![warn(missing_docs)]

mod accumulate;
mod builder;
mod calibration;
mod config;
mod context;
#[cfg(feature = "cuda")]
mod cuda;
mod device;
mod error;
mod fake_quant;
mod gptq;
pub mod kernel_plan;
pub mod layers;
mod lsq;
mod op;
pub mod process;
mod quantizer;
mod registry;
mod rotation;
mod smoothing;

pub use accumulate::{
    AccumulatedMatmul, conv2d_accumulated, linear_accumulated, matmul_accumulated, straight_through,
};
pub use builder::{ExplainRow, LayerEntry, LayerTable, QBuilder, QuantModel};
pub use calibration::{Observations, StaticScales};
pub use config::{
    AccumulatorSetting, Choice, ChoiceValue, CompiledConfig, GptqSetting, LayerRule, OpClass,
    QuantConfig, ResolvedLayer, RoleSettings, RotationSetting, Setting, SmoothingSetting,
};
pub use context::{Mode, ModelContext, TapRecord};
pub use device::parse_device;
pub use error::{NnError, Result};
pub use fake_quant::{ElementQuant, FakeQuant, FrozenScales, Ste};
pub use gptq::Gptq;
pub use lsq::LsqFakeQuant;
pub use op::{LayerQuant, QuantOp};
pub use quantizer::{Quantizer, Role};
pub use registry::{Activation, OpFactory, OpParams, Registry};
pub use rotation::{Rotation, Rotator};
pub use smoothing::{SMOOTHING_FLOOR, Smoothing, SmoothingFactors};
