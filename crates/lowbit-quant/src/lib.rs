//! # lowbit-quant
//!
//! Quantizers on top of [`lowbit_formats`]: one typed [`QuantSpec`] saying how a tensor is
//! split into groups, how each group's scale is chosen and stored, and how the elements are
//! rounded; fused per-block kernels for fake-quant and real codes; OCP MX and NVFP4 exactly as
//! specified; calibrators that turn batches into frozen scales; packed tensors in safetensors;
//! compliance checks against the independent value tables. No Candle: it works on `&[f32]` plus
//! a shape (and ndarray views).
//!
//! ```
//! use lowbit_quant::QuantSpec;
//!
//! // OCP MX FP8 (E4M3 elements, blocks of 32, E8M0 shared exponent, FLOOR).
//! let mx: QuantSpec = "mxfp8_e4m3".parse()?;
//! let mut x = vec![1.0f32; 32];
//! x[0] = 957.0; // floor(log2 957) = 9, emax(E4M3) = 8: X = 2, 957/2 = 478.5 saturates to 448
//! let mut q = vec![0.0; 32];
//! mx.fake_quantize(&x, &[1, 32], &mut q)?;
//! assert_eq!(q[0], 896.0);
//! assert_eq!(q[1], 1.0);
//!
//! // Real 4-bit storage: MXFP4 is 4 bits per element plus one 8-bit scale per 32.
//! let t = "mxfp4".parse::<QuantSpec>()?.quantize(&x, &[1, 32])?;
//! assert_eq!(t.bits_per_element(), 4.25);
//! assert_eq!(t.scales().values, [128.0]); // 2^(9 − 2)
//!
//! // 2-D tiles (DeepSeek-V3's FP8 weights): one scale per 128 × 128 tile of a [256, 384] weight.
//! let w = vec![0.5f32; 256 * 384];
//! let s = "fp8_e4m3_tile128x128".parse::<QuantSpec>()?.compute_scales(&w, &[256, 384])?;
//! assert_eq!(s.shape, [2, 3]);
//! # Ok::<(), lowbit_quant::QuantError>(())
//! ```
//!
//! ## Map
//!
//! - [`QuantSpec`], [`Granularity`], [`ScaleKind`] and the rounding enums (`spec.rs`): the
//!   spec, its builder, validation, presets, `Display`, serde.
//! - `engine.rs`: [`QuantSpec::fake_quantize`], [`QuantSpec::fake_quantize_with_scales`],
//!   [`QuantSpec::compute_scales`], [`Scales`]; fused per-block kernels over rayon.
//! - [`GroupLayout`], [`TileGrid`] (`layout.rs`): the groups of a spec on a shape
//!   ([`QuantSpec::layout`]): per tensor, per channel, blocks along an axis, whole axes, 2-D
//!   tiles of the last two axes.
//! - `scale.rs`: the scale rules (f32, power of two, E8M0 FLOOR/CEIL/EVEN/RCEIL, NVFP4).
//! - [`QuantizedTensor`] (`tensor.rs`): packed codes + scales, dequantize, bits per element,
//!   safetensors.
//! - [`Calibrator`], [`Method`] (`calib.rs`): max, min-max, moving average, percentile, MSE,
//!   entropy (KL) observers, frozen into [`Scales`].
//! - [`gptq`], [`Hessian`], [`GptqOptions`] (`gptq.rs`): GPTQ weight quantization with the
//!   inputs' Hessian (the reference algorithm, any spec with groups along the input axis).
//! - [`check_compliance`], [`ComplianceReport`] (`compliance.rs`): off-grid elements and
//!   broken scale constraints, judged by the value tables.
//! - [`ShiftReport`] (`report.rs`): power-of-two scales as shifts for hardware.
//! - `view.rs`: ndarray entry points ([`QuantSpec::fake_quantize_view`]).
//! - [`QuantError`] (`error.rs`).
//!
//! See docs/quantization.md for the formulas and sources.

#![warn(missing_docs)]

mod calib;
mod compliance;
mod engine;
mod error;
mod gptq;
mod layout;
mod report;
mod scale;
mod spec;
mod tensor;
mod view;

pub use calib::{Calibrator, Frozen, Method};

pub use compliance::{ComplianceReport, check_compliance, scale_is_valid};
pub use engine::Scales;
pub use error::{QuantError, Result};
pub use gptq::{GptqOptions, GptqWeight, Hessian, gptq};
pub use layout::{GroupKind, GroupLayout, TileGrid};
pub use report::{ShiftReport, shift_report};

pub use scale::{E4M3_MAX, E4M3_MIN_NORMAL};
pub use spec::{
    E4m3Rounding, E8m0Rounding, Granularity, MX_BLOCK, NVFP4_BLOCK, PRESETS, Po2Rounding,
    QuantSpec, QuantSpecBuilder, ScaleKind, ScaleMode,
};
pub use tensor::{META_SHAPE, META_SPEC, QuantizedTensor};
