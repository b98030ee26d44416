//! [`QuantSpec`]: the one typed description of a quantizer, its builder and its presets.

use std::fmt;
use std::str::FromStr;

use lowbit_formats::{Conversion, Encoding, Format, Overflow, Rounding};
use serde::{Deserialize, Serialize};

use crate::error::{QuantError, Result, invalid};

/// How a tensor is split into groups that share one scale.
///
/// `axis` counts like NumPy: `-1` is the last axis (the default everywhere), `0` the first.
/// It is checked against the tensor's rank when a tensor arrives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Granularity {
    /// One scale for the whole tensor (the default).
    #[default]
    PerTensor,
    /// One scale per index along `axis` (per output channel of a weight with `axis = 0`).
    PerChannel {
        /// The channel axis.
        axis: isize,
    },
    /// One scale per run of `size` consecutive elements along `axis` (MX blocks, NVFP4 blocks,
    /// "chunks" in QBench, groups in GPTQ-style int4). When the axis length is not a multiple
    /// of `size`, the last block of each row is shorter (see [`QuantSpec`]).
    PerBlock {
        /// The axis the blocks run along.
        axis: isize,
        /// Elements per block (≥ 1).
        size: usize,
    },
    /// One scale per whole slice along `axis`: the reduction runs over the axis, so a `[tokens,
    /// hidden]` activation with `axis = -1` gets one scale per token.
    WholeAxis {
        /// The axis reduced over.
        axis: isize,
    },
    /// One scale per `rows × cols` tile of the matrices formed by the last two axes (2-D
    /// block scaling: DeepSeek-V3's 128 × 128 FP8 weight blocks, NVIDIA's 16 × 16 NVFP4
    /// weight blocks, square MX blocks), with the leading axes as a batch of matrices. A
    /// rank-1 tensor is one row. Tiles at the bottom and right edges may be smaller (they get
    /// their own scale from their own elements); a tile taller or wider than the matrix is cut
    /// to it. See [`crate::GroupLayout`] for the scale shape and element order.
    PerTile {
        /// Tile height (along the second-to-last axis, ≥ 1).
        rows: usize,
        /// Tile width (along the last axis, ≥ 1).
        cols: usize,
    },
}

/// Rounding of `log2` for power-of-two scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Po2Rounding {
    /// `2^floor(log2(amax/max))`: the largest power of two not above the f32 scale; the top
    /// values of the group may saturate.
    Floor,
    /// `2^ceil(log2(amax/max))`: the smallest power of two not below the f32 scale; never clips.
    Ceil,
    /// The power of two nearest to the f32 scale in the log domain (tie at `√2` goes up).
    Nearest,
}

/// How an E8M0 shared exponent is derived from the group's amax (OCP MX and its variants).
///
/// `emax` is the exponent of the element format's largest value (8 for E4M3, 15 for E5M2,
/// 2 for E2M3 and E2M1, 4 for E3M2, 0 for MXINT8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum E8m0Rounding {
    /// OCP MX v1.0 §6.3: `floor(log2(amax)) − emax`. Values above the element maximum after
    /// scaling saturate.
    Floor,
    /// `ceil(log2(amax)) − emax` (torchao `CEIL`).
    Ceil,
    /// Round amax to the element's mantissa width (half up) first, then FLOOR (torchao `EVEN`).
    Even,
    /// `ceil(log2(amax / max))` (NVIDIA `cvt.rp.satfinite.ue8m0`, torchao `RCEIL`): never clips.
    #[serde(rename = "rceil", alias = "r_ceil")]
    RCeil,
}

/// Rounding of the E4M3 block scale of NVFP4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum E4m3Rounding {
    /// Round to nearest even (torchao's `to(float8_e4m3fn)`); a block max may then clip to 6.
    Nearest,
    /// Round up to the next E4M3 value, so `block_amax / scale ≤ 6` and nothing clips.
    Up,
}

/// How a group's scale is chosen and stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ScaleKind {
    /// Any positive `f32`: `scale = amax / max` (symmetric) or `(max − min) / (qmax − qmin)`
    /// (the default).
    #[default]
    F32,
    /// A power of two, rounded from the f32 scale (`power_of_two`, or `po2`, in configs).
    #[serde(alias = "po2")]
    PowerOfTwo {
        /// Rounding of `log2`.
        rounding: Po2Rounding,
    },
    /// An E8M0 shared exponent, `2^e` with `−127 ≤ e ≤ 127`, NaN for groups holding inf/NaN
    /// (`e8m0` in configs; `e8_m0`, the name before 2026-11-30, is still read).
    #[serde(rename = "e8m0", alias = "e8_m0")]
    E8M0 {
        /// How `e` follows from amax.
        rounding: E8m0Rounding,
    },
    /// NVFP4's two levels: an f32 tensor scale `amax / (448 · max)` and an E4M3 block scale.
    Nvfp4 {
        /// Rounding of the E4M3 block scale.
        block_rounding: E4m3Rounding,
    },
    /// One level of E4M3 scales, `E4M3(clamp(amax / max, 2⁻⁶, 448))`, no tensor scale:
    /// torchao's NVFP4 without a per-tensor scale (`nvfp4_quantize(x, per_tensor_scale=None)`),
    /// and FP8-scaled variants of the MX formats. Groups whose `amax / max` lies outside
    /// E4M3's normal range clip (above 448) or lose precision (below 2⁻⁶): the tensor scale
    /// of [`ScaleKind::Nvfp4`] is what avoids that (`e4m3` in configs).
    #[serde(rename = "e4m3", alias = "e4_m3")]
    E4M3 {
        /// Rounding of the E4M3 scale.
        rounding: E4m3Rounding,
    },
}

/// Whether scales come from the tensor at every call or are frozen from calibration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleMode {
    /// Scales computed from each tensor (weights, dynamic activation quantization).
    #[default]
    Dynamic,
    /// Scales frozen by a [`crate::Calibrator`] and passed in.
    Static,
}

/// A complete, validated quantizer description.
///
/// Build one from a preset (`"mxfp4".parse()`, [`QuantSpec::preset`]) or with
/// [`QuantSpec::builder`]; every constructor validates, so a `QuantSpec` value is always
/// usable. `Display` prints the resolved spec; serde reads and writes it (and validates on
/// read).
///
/// **Scale convention.** Every path applies a scale by multiplying with its reciprocal,
/// computed once in `f32`: `q(x) = Q(x · (1/s)) · s` (PyTorch `fake_quantize`). For power-of-two
/// scales this equals `x / s`; for others it can differ by one ulp. NVFP4 and one-level E4M3
/// scales divide instead, `Q(x / s) · s`, as torchao's `nvfp4_quantize` does (tested bit for
/// bit against its output).
///
/// **Partial blocks.** A block granularity whose axis length is not a multiple of the block size
/// is allowed: each row's last block is shorter, and gets its own scale computed from its own
/// elements. Scales have `ceil(len / size)` entries along the axis.
///
/// ```
/// use lowbit_quant::{Granularity, QuantSpec, ScaleKind, E8m0Rounding};
/// let mx: QuantSpec = "mxfp8_e4m3".parse()?;
/// assert_eq!(mx.granularity(), Granularity::PerBlock { axis: -1, size: 32 });
/// assert_eq!(mx.scale(), ScaleKind::E8M0 { rounding: E8m0Rounding::Floor });
/// let ceil = mx.to_builder().scale(ScaleKind::E8M0 { rounding: E8m0Rounding::Ceil }).build()?;
/// assert!(ceil.to_string().contains("e8m0(ceil)"));
/// assert!(QuantSpec::builder(lowbit_formats::Format::E8M0).build().is_err());
/// # Ok::<(), lowbit_quant::QuantError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "SpecFields", into = "SpecFields")]
pub struct QuantSpec {
    f: SpecFields,
}

/// The raw fields, as serialized. Unknown fields are errors (a misspelt key must not fall back
/// to a default silently).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFields {
    format: Format,
    /// Absent: [`QuantSpec::builder`]'s defaults (saturating nearest-even, per tensor, f32).
    #[serde(default = "default_conversion")]
    conversion: Conversion,
    #[serde(default)]
    granularity: Granularity,
    #[serde(default)]
    scale: ScaleKind,
    #[serde(default)]
    asymmetric: bool,
    #[serde(default)]
    mode: ScaleMode,
}

fn default_conversion() -> Conversion {
    Conversion::SATURATE
}

impl TryFrom<SpecFields> for QuantSpec {
    type Error = QuantError;
    fn try_from(f: SpecFields) -> Result<QuantSpec> {
        validate(&f)?;
        Ok(QuantSpec { f })
    }
}

impl From<QuantSpec> for SpecFields {
    fn from(s: QuantSpec) -> SpecFields {
        s.f
    }
}

fn validate(f: &SpecFields) -> Result<()> {
    if let Format::Float(m) = f.format
        && (m.encoding() == Encoding::Fnu || !m.is_signed())
    {
        return Err(invalid(
            "format",
            format!(
                "`{}` is an unsigned exponent-only scale format (E8M0 style), not an element format",
                f.format
            ),
        ));
    }
    if f.format.bits() > 8 {
        return Err(invalid(
            "format",
            format!(
                "`{}` has {} bits; quantizers support element formats of at most 8 bits",
                f.format,
                f.format.bits()
            ),
        ));
    }
    match f.granularity {
        Granularity::PerBlock { size: 0, .. } => {
            return Err(invalid("block size", "must be at least 1"));
        }
        Granularity::PerTile { rows, cols } if rows == 0 || cols == 0 => {
            return Err(invalid(
                "tile",
                format!("{rows} x {cols}: both sides must be at least 1"),
            ));
        }
        Granularity::PerTensor
        | Granularity::PerChannel { .. }
        | Granularity::PerBlock { .. }
        | Granularity::PerTile { .. }
        | Granularity::WholeAxis { .. } => {}
    }
    if f.asymmetric {
        if f.format.as_int().is_none() {
            return Err(invalid(
                "zero point",
                format!(
                    "asymmetric quantization needs an integer element format; `{}` is a float format (floats are symmetric)",
                    f.format
                ),
            ));
        }
        if !matches!(f.scale, ScaleKind::F32 | ScaleKind::PowerOfTwo { .. }) {
            return Err(invalid(
                "zero point",
                "asymmetric quantization needs f32 or power-of-two scales",
            ));
        }
    }
    if let ScaleKind::Nvfp4 { .. } = f.scale
        && !matches!(
            f.granularity,
            Granularity::PerBlock { .. } | Granularity::PerTile { .. }
        )
    {
        return Err(invalid(
            "scale",
            "nvfp4 two-level scales need a per-block or per-tile granularity",
        ));
    }
    Ok(())
}

impl ScaleKind {
    /// Bits a stored scale of this kind takes: 32 for f32, 8 for E8M0, E4M3 and power-of-two
    /// exponents (NVFP4's tensor scale is counted apart).
    pub fn storage_bits(&self) -> u32 {
        match self {
            ScaleKind::F32 => 32,
            ScaleKind::PowerOfTwo { .. }
            | ScaleKind::E8M0 { .. }
            | ScaleKind::Nvfp4 { .. }
            | ScaleKind::E4M3 { .. } => 8,
        }
    }
}

/// The preset names, in the order [`QuantSpec::presets`] lists them.
pub const PRESETS: &[&str] = &[
    "fp8_e4m3",
    "fp8_e5m2",
    "int8",
    "int4_g128",
    "mxfp8_e4m3",
    "mxfp8_e5m2",
    "mxfp6_e2m3",
    "mxfp6_e3m2",
    "mxfp4",
    "mxint8",
    "nvfp4",
    "fp8_e4m3_chunk128_po2",
    "fp8_e4m3_tile128x128",
];

/// OCP MX v1.0 block size.
pub const MX_BLOCK: usize = 32;
/// NVFP4 block size.
pub const NVFP4_BLOCK: usize = 16;

impl QuantSpec {
    /// A builder starting from `format` with the defaults: saturating nearest-even conversion,
    /// per-tensor, f32 scale, symmetric, dynamic.
    pub fn builder(format: Format) -> QuantSpecBuilder {
        QuantSpecBuilder {
            f: SpecFields {
                format,
                conversion: Conversion::SATURATE,
                granularity: Granularity::PerTensor,
                scale: ScaleKind::F32,
                asymmetric: false,
                mode: ScaleMode::Dynamic,
            },
        }
    }

    /// A builder holding this spec's fields, to derive a variant.
    pub fn to_builder(&self) -> QuantSpecBuilder {
        QuantSpecBuilder { f: self.f }
    }

    /// The named presets:
    ///
    /// | name | element | granularity | scale |
    /// |---|---|---|---|
    /// | `fp8_e4m3`, `fp8_e5m2` | E4M3FN, E5M2 | per tensor | f32 |
    /// | `int8` | int8 narrow | per channel, axis 0 (weights `[out, in]`) | f32 |
    /// | `int4_g128` | int4 narrow | blocks of 128 along the last axis | f32 |
    /// | `mxfp8_e4m3` … `mxfp4` | OCP MX elements | blocks of 32, last axis | E8M0 FLOOR |
    /// | `mxint8` | int8 × 2⁻⁶ (implied) | blocks of 32 | E8M0 FLOOR |
    /// | `nvfp4` | E2M1 | blocks of 16, last axis | f32 tensor × E4M3 block (nearest) |
    /// | `fp8_e4m3_chunk128_po2` | E4M3FN | blocks of 128 | power of two (ceil) |
    /// | `fp8_e4m3_tile128x128` | E4M3FN | 128 × 128 tiles, last two axes (DeepSeek-V3 weights) | f32 |
    pub fn preset(name: &str) -> Result<QuantSpec> {
        match preset_builder(name) {
            Some(b) => b.build(),
            None => Err(QuantError::UnknownPreset {
                name: name.to_string(),
                suggestion: did_you_mean(lowbit_formats::closest(name, PRESETS.iter().copied())),
                known: PRESETS.join(", "),
            }),
        }
    }

    /// Every preset, by name.
    pub fn presets() -> impl Iterator<Item = (&'static str, QuantSpec)> {
        PRESETS
            .iter()
            .filter_map(|n| QuantSpec::preset(n).ok().map(|s| (*n, s)))
    }

    /// The element format.
    pub fn format(&self) -> Format {
        self.f.format
    }
    /// The element conversion (rounding and overflow).
    pub fn conversion(&self) -> Conversion {
        self.f.conversion
    }
    /// This spec at training step `step`: under stochastic rounding, the seed becomes
    /// [`stochastic_step_seed`](lowbit_formats::stochastic_step_seed)`(seed, step)` (so each step
    /// draws fresh words, reproducibly); any other spec, or step 0, is returned unchanged.
    pub fn at_step(mut self, step: u64) -> QuantSpec {
        if let Rounding::Stochastic { seed } = self.f.conversion.rounding {
            self.f.conversion.rounding = Rounding::Stochastic {
                seed: lowbit_formats::stochastic_step_seed(seed, step),
            };
        }
        self
    }
    /// The granularity.
    pub fn granularity(&self) -> Granularity {
        self.f.granularity
    }
    /// The scale kind.
    pub fn scale(&self) -> ScaleKind {
        self.f.scale
    }
    /// Whether an integer zero point is used.
    pub fn is_asymmetric(&self) -> bool {
        self.f.asymmetric
    }
    /// Dynamic or static scales.
    pub fn mode(&self) -> ScaleMode {
        self.f.mode
    }

    /// The implied element scale: `2^−(bits−2)` for integer elements under E8M0 scales (OCP MX
    /// MXINT8: an int8 code `c` means `c · 2⁻⁶`), 1 otherwise.
    pub fn element_unit(&self) -> f32 {
        match (self.f.format, self.f.scale) {
            (Format::Int(i), ScaleKind::E8M0 { .. }) => pow2(-(i.bits() as i32 - 2)),
            _ => 1.0,
        }
    }

    /// Largest element value, in element units times [`element_unit`](Self::element_unit).
    pub fn element_max(&self) -> f32 {
        self.f.format.max_value() * self.element_unit()
    }

    /// `emax` of the element format: the exponent of its largest value (OCP MX Table 1: 8 for
    /// E4M3, 15 for E5M2, 4 for E3M2, 2 for E2M3/E2M1, 0 for MXINT8).
    pub fn element_emax(&self) -> i32 {
        exponent_of(self.element_max())
    }

    /// Mantissa bits of the element (for integers under E8M0: `bits − 2`, the fraction bits of
    /// the MXINT fixed point), used by [`E8m0Rounding::Even`].
    pub fn element_man_bits(&self) -> u32 {
        match self.f.format {
            Format::Float(m) => m.man_bits(),
            Format::Int(i) => i.bits().saturating_sub(2),
        }
    }
}

/// `2^k` as f32 for `−149 ≤ k ≤ 127`, built from bits.
pub(crate) fn pow2(k: i32) -> f32 {
    if k > 127 {
        f32::INFINITY
    } else if k >= -126 {
        f32::from_bits(((k + 127) as u32) << 23)
    } else if k >= -149 {
        f32::from_bits(1u32 << (k + 149))
    } else {
        0.0
    }
}

/// `floor(log2(|x|))` for finite non-zero `x`, from the bit pattern (f32 subnormals included).
pub(crate) fn exponent_of(x: f32) -> i32 {
    let a = x.to_bits() & 0x7FFF_FFFF;
    let e = (a >> 23) as i32;
    if e != 0 {
        e - 127
    } else {
        31 - a.leading_zeros() as i32 - 149
    }
}

/// Builds a [`QuantSpec`] field by field; [`build`](Self::build) validates.
#[derive(Clone, Copy, Debug)]
pub struct QuantSpecBuilder {
    f: SpecFields,
}

impl QuantSpecBuilder {
    /// The element format.
    pub fn format(mut self, format: Format) -> Self {
        self.f.format = format;
        self
    }
    /// The element conversion.
    pub fn conversion(mut self, conversion: Conversion) -> Self {
        self.f.conversion = conversion;
        self
    }
    /// The element rounding (keeps the overflow policy).
    pub fn rounding(mut self, rounding: Rounding) -> Self {
        self.f.conversion.rounding = rounding;
        self
    }
    /// The element overflow policy (quantizers saturate by default).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.f.conversion.overflow = overflow;
        self
    }
    /// The granularity.
    pub fn granularity(mut self, granularity: Granularity) -> Self {
        self.f.granularity = granularity;
        self
    }
    /// Blocks of `size` along `axis`.
    pub fn per_block(self, axis: isize, size: usize) -> Self {
        self.granularity(Granularity::PerBlock { axis, size })
    }
    /// One scale per `rows × cols` tile of the last two axes.
    pub fn per_tile(self, rows: usize, cols: usize) -> Self {
        self.granularity(Granularity::PerTile { rows, cols })
    }
    /// One scale per channel along `axis`.
    pub fn per_channel(self, axis: isize) -> Self {
        self.granularity(Granularity::PerChannel { axis })
    }
    /// The scale kind.
    pub fn scale(mut self, scale: ScaleKind) -> Self {
        self.f.scale = scale;
        self
    }
    /// Asymmetric (integer zero point) or symmetric.
    pub fn asymmetric(mut self, asymmetric: bool) -> Self {
        self.f.asymmetric = asymmetric;
        self
    }
    /// Narrow (`±(2^(b−1)−1)`) or full (`−2^(b−1)..`) range for signed integer formats;
    /// ignored for floats.
    pub fn narrow_range(mut self, narrow: bool) -> Self {
        if let Format::Int(i) = self.f.format
            && i.is_signed()
            && let Ok(f) = Format::int(i.bits(), true, narrow)
        {
            self.f.format = f;
        }
        self
    }
    /// Dynamic or static scales.
    pub fn mode(mut self, mode: ScaleMode) -> Self {
        self.f.mode = mode;
        self
    }
    /// Validates and returns the spec.
    pub fn build(self) -> Result<QuantSpec> {
        QuantSpec::try_from(self.f)
    }
}

impl FromStr for QuantSpec {
    type Err = QuantError;
    /// Parses a preset name (see [`QuantSpec::preset`]) or, failing that, a format name (see
    /// `lowbit_formats::Format`), which gives [`QuantSpec::builder`]'s defaults: per tensor,
    /// dynamic `f32` scale from the absolute maximum, saturating nearest-even cast. A name
    /// that is both (`int8`) is the preset.
    fn from_str(s: &str) -> Result<QuantSpec> {
        if let Some(b) = preset_builder(s) {
            return b.build();
        }
        match s.parse::<Format>() {
            Ok(format) => QuantSpec::builder(format).build(),
            Err(_) => Err(QuantError::UnknownPreset {
                name: s.to_string(),
                suggestion: did_you_mean(
                    lowbit_formats::closest(s, PRESETS.iter().copied())
                        .or_else(|| Format::closest_name(s)),
                ),
                known: format!(
                    "{}; or a format name for a per-tensor spec (e4m3fn, e2m1, int4, e3m4, …: \
                     `lowbit formats`)",
                    PRESETS.join(", ")
                ),
            }),
        }
    }
}

/// The builder of preset `name` (case-insensitive), or `None` for an unknown name.
fn preset_builder(name: &str) -> Option<QuantSpecBuilder> {
    let key = name.trim().to_ascii_lowercase();
    let block = |size| Granularity::PerBlock { axis: -1, size };
    let mx = ScaleKind::E8M0 {
        rounding: E8m0Rounding::Floor,
    };
    let (format, granularity, scale) = match key.as_str() {
        "fp8_e4m3" => (Format::E4M3FN, Granularity::PerTensor, ScaleKind::F32),
        "fp8_e5m2" => (Format::E5M2, Granularity::PerTensor, ScaleKind::F32),
        "int8" => (
            Format::INT8,
            Granularity::PerChannel { axis: 0 },
            ScaleKind::F32,
        ),
        "int4_g128" => (Format::INT4, block(128), ScaleKind::F32),
        "mxfp8_e4m3" => (Format::E4M3FN, block(MX_BLOCK), mx),
        "mxfp8_e5m2" => (Format::E5M2, block(MX_BLOCK), mx),
        "mxfp6_e2m3" => (Format::E2M3, block(MX_BLOCK), mx),
        "mxfp6_e3m2" => (Format::E3M2, block(MX_BLOCK), mx),
        "mxfp4" => (Format::E2M1, block(MX_BLOCK), mx),
        "mxint8" => (Format::INT8, block(MX_BLOCK), mx),
        "nvfp4" => (
            Format::E2M1,
            block(NVFP4_BLOCK),
            ScaleKind::Nvfp4 {
                block_rounding: E4m3Rounding::Nearest,
            },
        ),
        "fp8_e4m3_chunk128_po2" => (
            Format::E4M3FN,
            block(128),
            ScaleKind::PowerOfTwo {
                rounding: Po2Rounding::Ceil,
            },
        ),
        "fp8_e4m3_tile128x128" => (
            Format::E4M3FN,
            Granularity::PerTile {
                rows: 128,
                cols: 128,
            },
            ScaleKind::F32,
        ),
        _ => return None,
    };
    Some(
        QuantSpec::builder(format)
            .granularity(granularity)
            .scale(scale),
    )
}

/// ` (did you mean `x`?)` for a suggestion, or nothing.
fn did_you_mean(near: Option<&str>) -> String {
    near.map_or(String::new(), |n| format!(" (did you mean `{n}`?)"))
}

fn axis_str(axis: isize) -> String {
    if axis == -1 {
        "last axis".to_string()
    } else {
        format!("axis {axis}")
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Granularity::PerTensor => out.write_str("per tensor"),
            Granularity::PerChannel { axis } => write!(out, "per channel ({})", axis_str(axis)),
            Granularity::PerBlock { axis, size } => {
                write!(out, "blocks of {size} ({})", axis_str(axis))
            }
            Granularity::WholeAxis { axis } => {
                write!(out, "one scale per slice over {}", axis_str(axis))
            }
            Granularity::PerTile { rows, cols } => {
                write!(out, "tiles of {rows} x {cols} (last two axes)")
            }
        }
    }
}

impl fmt::Display for ScaleKind {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lower = |d: &dyn fmt::Debug| format!("{d:?}").to_ascii_lowercase();
        match self {
            ScaleKind::F32 => out.write_str("f32"),
            ScaleKind::PowerOfTwo { rounding } => write!(out, "po2({})", lower(rounding)),
            ScaleKind::E8M0 { rounding } => write!(out, "e8m0({})", lower(rounding)),
            ScaleKind::Nvfp4 { block_rounding } => {
                write!(out, "f32 tensor x e4m3({}) block", lower(block_rounding))
            }
            ScaleKind::E4M3 { rounding } => write!(out, "e4m3({})", lower(rounding)),
        }
    }
}

impl fmt::Display for QuantSpec {
    /// E.g. `e2m1 [nearest_even, saturate], blocks of 32 (last axis), scale e8m0(floor), symmetric, dynamic`.
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let f = &self.f;
        let rounding = match f.conversion.rounding {
            Rounding::NearestEven => "nearest_even".to_string(),
            Rounding::NearestAway => "nearest_away".to_string(),
            Rounding::TowardZero => "toward_zero".to_string(),
            Rounding::Stochastic { seed } => format!("stochastic(seed {seed})"),
        };
        let overflow = match f.conversion.overflow {
            Overflow::Saturate => "saturate",
            Overflow::Reference => "reference overflow",
        };
        write!(out, "{} [{rounding}, {overflow}]", f.format)?;
        let unit = self.element_unit();
        if unit != 1.0 {
            write!(out, " x 2^({})", exponent_of(unit))?;
        }
        write!(out, ", {}, scale {}", f.granularity, f.scale)?;
        write!(
            out,
            ", {}",
            if f.asymmetric {
                "asymmetric"
            } else {
                "symmetric"
            }
        )?;
        write!(
            out,
            ", {}",
            if f.mode == ScaleMode::Static {
                "static"
            } else {
                "dynamic"
            }
        )
    }
}
