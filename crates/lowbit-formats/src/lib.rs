//! # lowbit-formats
//!
//! Bit-exact codecs for low-precision number formats: FP8 (E4M3FN, E4M3, E5M2, the FNUZ
//! variants), FP6 (E2M3, E3M2), FP4 (E2M1, E3M0), the E8M0 scale, INT2–16 and any `ExMy`
//! minifloat, with encode (f32 → code), decode (code → f32) and fused fake-quant
//! (`decode(encode(x))`), for single values and slices, plus sub-byte packing.
//!
//! The default conversion is ml_dtypes' `astype`, bit for bit (round to nearest even straight
//! from `f32`, its overflow, NaN, −0 and E8M0 rules); other rounding rules and saturation are a
//! [`Conversion`] away. No Candle, no allocation on the hot path.
//!
//! ```
//! use lowbit_formats::{Codec, Conversion, Format, Overflow, Rounding};
//!
//! let e4m3: Format = "fp8_e4m3".parse()?;          // = e4m3fn, the OCP/NVIDIA FP8
//! assert_eq!(e4m3.max_value(), 448.0);
//! assert_eq!(e4m3.quantize(300.0), 288.0);
//! assert!(e4m3.quantize(500.0).is_nan());          // ml_dtypes: overflow is NaN
//!
//! // The quantizer's cast: saturate, on slices, SIMD and threads picked at run time.
//! let codec = Codec::new(e4m3, Conversion::new(Rounding::NearestEven, Overflow::Saturate));
//! let mut out = [0.0; 3];
//! codec.quantize_slice(&[500.0, -0.1, 1.0e-9], &mut out)?;
//! assert_eq!(out, [448.0, -0.1015625, 0.0]);
//!
//! // Facts and the independent value table.
//! let fp4 = Format::E2M1;
//! assert_eq!(fp4.values(), [-6.0, -4.0, -3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
//! # Ok::<(), lowbit_formats::FormatError>(())
//! ```
//!
//! ## Map
//!
//! - [`Format`] (`format.rs`): the runtime format value; parse with `FromStr` (every ml_dtypes
//!   float name too; a misspelt name gets a [`closest`] suggestion), print with `Display`;
//!   scalar `encode` / `decode` / `quantize` and the slice entry points.
//! - [`MiniFloat`], [`Encoding`] (`minifloat.rs`): `ExMy` parameters and the **scalar
//!   reference codec**, its rounding derived step by step in comments.
//! - [`IntFormat`] (`integer.rs`): signed/unsigned integer grids, narrow or full range;
//!   [`round_integer`], the rounding rules without saturation (for zero points added after
//!   rounding).
//! - [`Rounding`], [`Overflow`], [`Conversion`], [`stochastic_bits`], [`stochastic_step_seed`]
//!   (`rounding.rs`).
//! - [`Codec`], [`Isa`] (`codec.rs`, `kernels/`): prepared slice kernels — the scalar lane
//!   algorithm (`kernels/lane.rs`) and its AVX2 / AVX-512 twins (`kernels/avx2.rs`,
//!   `kernels/avx512.rs`, with their fused block kernels and decoders in `avx2/`, `avx512/`),
//!   arithmetic decoding (`kernels/decode.rs`), stochastic rounding with its generator in
//!   registers (`kernels/stochastic.rs`), chosen at run time, forceable, threaded with rayon.
//! - [`FormatFacts`], [`ValueTable`] (`facts.rs`): bits, bias, max, min normal, min subnormal,
//!   inf/NaN codes, value counts, the sorted value table.
//! - [`pack`](mod@pack) (`pack.rs`): FP4/INT4 two per byte, FP6 four in three bytes, INT2 four per byte.
//! - [`Accumulator`], [`AccumulatorFormat`], [`AccumulatorRounding`] (`accumulate.rs`): the
//!   running sum of a dot product in fewer bits than f32 (FP16/BF16/FP22 adders, chunked FP32
//!   promotion), for simulated matmuls.
//! - [`FormatError`] (`error.rs`).

#![warn(missing_docs)]

mod accumulate;
mod codec;
mod error;
mod facts;
mod format;
mod integer;
mod kernels;
mod minifloat;
pub mod pack;
mod rounding;

pub use accumulate::{Accumulator, AccumulatorFormat, AccumulatorRounding};
pub use codec::{Codec, abs_max_blocks, abs_max_blocks_on};
pub use error::{FormatError, Result};
pub use facts::{FormatFacts, ValueTable};
pub use format::{Format, closest, default_encoding};
pub use integer::{IntFormat, round_integer};
pub use kernels::Isa;
pub use minifloat::{Encoding, MiniFloat};
pub use rounding::{
    Conversion, Overflow, Rounding, round_shift, stochastic_bits, stochastic_step_seed,
};
