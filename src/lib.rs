//! # lowbit
//!
//! Bit-exact, memory-speed simulation of low-precision number formats on real neural networks.
//! This facade re-exports the workspace crates:
//!
//! - [`formats`]: bit-exact codecs (FP8/FP6/FP4/E8M0/INTn/any ExMy), SIMD kernels, packing.
//! - [`quant`]: quantizers — `QuantSpec`, MX/NVFP4 scales, calibrators, packed tensors.
//! - [`nn`]: quantized layers on Candle — fake-quant op with STE, registry, configs, taps.
//! - [`models`]: real networks built through the `nn` builder (the embedded Fashion-MNIST
//!   ResNet and its weights), their checkpoints and data sets.
//!
//! ```
//! let f: lowbit::formats::Format = "e2m1".parse()?;
//! assert_eq!(f.quantize(2.6), 3.0);
//! # Ok::<(), lowbit::formats::FormatError>(())
//! ```

pub use lowbit_formats as formats;
pub use lowbit_models as models;
pub use lowbit_nn as nn;
pub use lowbit_quant as quant;
