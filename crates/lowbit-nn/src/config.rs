//! [`QuantConfig`]: which quantizer every layer gets, written by users in YAML.
//!
//! ```yaml
//! defaults:            # per role; a preset name, a full spec mapping, or null (off)
//!   weight: int8
//!   input: fp8_e4m3
//! ops:                 # per op kind, over the defaults
//!   softmax: { output: fp8_e5m2 }
//! layers:              # per layer, by glob on the full layer name; in order, the last match wins
//!   - pattern: "encoder.layer.*.attention.self.*"
//!     weight: int4_g128
//! skip: ["embeddings.*"]
//! quantize_first_layer: false
//! quantize_last_layer: false
//! quantized_ops: [linear, conv2d, matmul]   # absent: every op kind
//! backward: e5m2                             # gradient format in QAT (absent: gradients stay f32)
//! ```
//!
//! `accumulator` (in `defaults`, `ops.<kind>` and `layers`) sets the number format of the dot
//! products of `linear`, `matmul` and `conv2d` layers: `fp22`, `bf16`, `{format: e8m13, rounding:
//! toward_zero, chunk: 128}` (see [`crate::matmul_accumulated`]); `null` is the f32 matmul.
//! `rotation: {size, seed}` turns `linear` layers' inputs and weights (and, from `ops.matmul`
//! or `layers`, `matmul` operands) by a block-Hadamard matrix before they are quantized
//! ([`crate::Rotation`]); `smoothing: 0.5` (or `{alpha: 0.5}`)
//! divides their inputs by SmoothQuant's calibrated per-channel factors and multiplies the
//! weights by them ([`crate::Smoothing`]; needs `lowbit calibrate`); `gptq: {}` (or `{damp,
//! block}`) quantizes `linear` weights with GPTQ from the calibration inputs ([`crate::Gptq`];
//! needs `lowbit calibrate`).
//!
//! Resolution of one role of one layer: the default of its op class (`input`/`output` for
//! compute ops, `activation` for both sides of activation ops), then `ops.<kind>`, then every
//! matching `layers` entry in file order. A key that is absent inherits; `null` turns the
//! quantizer off. `skip`, `quantized_ops` and the first/last switches remove every quantizer
//! of a layer. Every error names the file, the line where it can be found, and the key.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use globset::{Glob, GlobMatcher};
use lowbit_formats::{Accumulator, AccumulatorFormat, AccumulatorRounding};

use crate::gptq::Gptq;
use crate::rotation::Rotation;
use crate::smoothing::Smoothing;
use lowbit_quant::QuantSpec;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{NnError, Result};

/// A role's setting in a config: absent (inherit), `null` (off) or a spec.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Setting {
    /// Not written: inherit.
    #[default]
    Inherit,
    /// `null`: no quantizer.
    Off,
    /// A quantizer.
    Spec(QuantSpec),
}

impl Setting {
    fn is_inherit(&self) -> bool {
        matches!(self, Setting::Inherit)
    }
    fn apply(&self, to: &mut Option<QuantSpec>) {
        match self {
            Setting::Inherit => {}
            Setting::Off => *to = None,
            Setting::Spec(s) => *to = Some(*s),
        }
    }
}

impl<'de> Deserialize<'de> for Setting {
    /// `null` → off; a string → a preset (or format) name; a mapping → a full spec, whose own
    /// validation error (naming the bad field) is reported as is.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Setting, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Setting;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a preset name (e.g. mxfp4), a spec mapping, or null")
            }
            fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Setting, E> {
                Ok(Setting::Off)
            }
            fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Setting, E> {
                Ok(Setting::Off)
            }
            fn visit_some<D2: Deserializer<'de>>(
                self,
                d: D2,
            ) -> std::result::Result<Setting, D2::Error> {
                d.deserialize_any(V)
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Setting, E> {
                QuantSpec::from_str(s).map(Setting::Spec).map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<Setting, A::Error> {
                QuantSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(Setting::Spec)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Setting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Setting::Spec(spec) => spec.serialize(s),
            _ => s.serialize_none(),
        }
    }
}

/// A non-spec setting of a config (`accumulator`, `rotation`, `smoothing`): absent (inherit),
/// `null` (off)
/// or a value.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Choice<T> {
    /// Not written: inherit.
    #[default]
    Inherit,
    /// `null`: off.
    Off,
    /// A value.
    On(T),
}

impl<T: Copy> Choice<T> {
    fn is_inherit(&self) -> bool {
        matches!(self, Choice::Inherit)
    }
    fn apply(&self, to: &mut Option<T>) {
        match self {
            Choice::Inherit => {}
            Choice::Off => *to = None,
            Choice::On(v) => *to = Some(*v),
        }
    }
}

/// What a [`Choice`] holds: read from a mapping (checked), or from a string where the value
/// has a short form.
pub trait ChoiceValue: Copy + for<'de> Deserialize<'de> + Serialize {
    /// What the YAML may hold, for messages.
    const EXPECTING: &'static str;
    /// The value of a string (`None`: no string form).
    fn from_name(s: &str) -> Option<std::result::Result<Self, String>>;
    /// Checks a value read from a mapping.
    fn check(&self) -> std::result::Result<(), String>;
    /// The value of a number (`None`: no number form).
    fn from_number(_: f64) -> Option<std::result::Result<Self, String>> {
        None
    }
}

impl ChoiceValue for Accumulator {
    const EXPECTING: &'static str = "an accumulator format (fp32, tf32, fp22, bf16, fp16, eXmY), \
         a mapping {format, rounding, chunk}, or null";
    fn from_name(s: &str) -> Option<std::result::Result<Self, String>> {
        Some(
            AccumulatorFormat::from_str(s)
                .map(|format| Accumulator {
                    format,
                    rounding: AccumulatorRounding::NearestEven,
                    chunk: None,
                })
                .map_err(|e| e.to_string()),
        )
    }
    fn check(&self) -> std::result::Result<(), String> {
        self.validate().map_err(|e| e.to_string())
    }
}

impl ChoiceValue for Rotation {
    const EXPECTING: &'static str = "a rotation {size, seed}, or null";
    fn from_name(_: &str) -> Option<std::result::Result<Self, String>> {
        None
    }
    fn check(&self) -> std::result::Result<(), String> {
        self.validate()
    }
}

impl ChoiceValue for Smoothing {
    const EXPECTING: &'static str =
        "a smoothing strength alpha (0 to 1), a mapping {alpha}, or null";
    fn from_name(_: &str) -> Option<std::result::Result<Self, String>> {
        None
    }
    fn check(&self) -> std::result::Result<(), String> {
        self.validate()
    }
    fn from_number(v: f64) -> Option<std::result::Result<Self, String>> {
        let s = Smoothing { alpha: v as f32 };
        Some(s.validate().map(|_| s))
    }
}

impl ChoiceValue for Gptq {
    const EXPECTING: &'static str = "gptq settings {damp, block, act_order, static_groups, sequential} (or {} for the defaults), a damp, or null";
    fn from_name(_: &str) -> Option<std::result::Result<Self, String>> {
        None
    }
    fn check(&self) -> std::result::Result<(), String> {
        self.validate()
    }
    fn from_number(v: f64) -> Option<std::result::Result<Self, String>> {
        let g = Gptq {
            damp: v,
            ..Gptq::default()
        };
        Some(g.validate().map(|_| g))
    }
}

impl<'de, T: ChoiceValue> Deserialize<'de> for Choice<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: ChoiceValue> serde::de::Visitor<'de> for V<T> {
            type Value = Choice<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
                Ok(Choice::Off)
            }
            fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
                Ok(Choice::Off)
            }
            fn visit_some<D2: Deserializer<'de>>(
                self,
                d: D2,
            ) -> std::result::Result<Self::Value, D2::Error> {
                d.deserialize_any(self)
            }
            fn visit_str<E: serde::de::Error>(
                self,
                s: &str,
            ) -> std::result::Result<Self::Value, E> {
                match T::from_name(s) {
                    Some(v) => v.map(Choice::On).map_err(E::custom),
                    None => Err(E::invalid_type(serde::de::Unexpected::Str(s), &self)),
                }
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Self::Value, E> {
                match T::from_number(v) {
                    Some(r) => r.map(Choice::On).map_err(E::custom),
                    None => Err(E::invalid_type(serde::de::Unexpected::Float(v), &self)),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Self::Value, E> {
                match T::from_number(v as f64) {
                    Some(r) => r.map(Choice::On).map_err(E::custom),
                    None => Err(E::invalid_type(serde::de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
                match T::from_number(v as f64) {
                    Some(r) => r.map(Choice::On).map_err(E::custom),
                    None => Err(E::invalid_type(serde::de::Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let v = T::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                v.check().map_err(serde::de::Error::custom)?;
                Ok(Choice::On(v))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<T: ChoiceValue> Serialize for Choice<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Choice::On(v) => v.serialize(s),
            _ => s.serialize_none(),
        }
    }
}

/// The `accumulator` setting: `null` is the f32 matmul; a format name (`fp22`, `bf16`,
/// `e8m13`, …; nearest-even, no promotion) or a mapping `{format, rounding: nearest_even |
/// toward_zero, chunk}` an [`Accumulator`].
pub type AccumulatorSetting = Choice<Accumulator>;

/// The `rotation` setting: `null` is none; a mapping `{size, seed}` a [`Rotation`].
pub type RotationSetting = Choice<Rotation>;

/// The `smoothing` setting: `null` is none; a number `alpha` or a mapping `{alpha}` a
/// [`Smoothing`] (SmoothQuant; needs calibration: `lowbit calibrate`).
pub type SmoothingSetting = Choice<Smoothing>;

/// The `gptq` setting: `null` is round-to-nearest; `{damp, block}` (or `{}`) or a damp value a
/// [`Gptq`] (needs calibration: `lowbit calibrate`).
pub type GptqSetting = Choice<Gptq>;

/// The op kinds a `gptq` setting reaches (others ignore it).
pub const GPTQ_OPS: &[&str] = &["linear"];

/// The op kinds a `smoothing` setting reaches (others ignore it).
pub const SMOOTHING_OPS: &[&str] = &["linear"];

/// The op kinds a `rotation` setting reaches (others ignore it). `defaults.rotation` reaches
/// `linear` layers only; a `matmul` takes one from `ops.matmul` or a `layers` rule (attention's
/// P·V contracts over the sequence, whose length a block need not divide).
pub const ROTATING_OPS: &[&str] = &["linear", "matmul"];

/// The op kinds whose dot products an `accumulator` setting reaches (others ignore it).
pub const ACCUMULATING_OPS: &[&str] = &["linear", "matmul", "conv2d"];

/// Settings per tensor role.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSettings {
    /// Weights of compute ops.
    #[serde(default, skip_serializing_if = "Setting::is_inherit")]
    pub weight: Setting,
    /// Biases.
    #[serde(default, skip_serializing_if = "Setting::is_inherit")]
    pub bias: Setting,
    /// Inputs of compute and structural ops (linear, conv, matmul, add, concat, pooling, norms).
    #[serde(default, skip_serializing_if = "Setting::is_inherit")]
    pub input: Setting,
    /// Outputs of compute and structural ops.
    #[serde(default, skip_serializing_if = "Setting::is_inherit")]
    pub output: Setting,
    /// Inputs and outputs of activation ops (relu, gelu, softmax, …); in `ops.<kind>` and
    /// `layers`, `input`/`output` address them directly.
    #[serde(default, skip_serializing_if = "Setting::is_inherit")]
    pub activation: Setting,
    /// The accumulator of the dot products of `linear`, `matmul` and `conv2d` ops.
    #[serde(default, skip_serializing_if = "Choice::is_inherit")]
    pub accumulator: AccumulatorSetting,
    /// The Hadamard rotation of `linear` layers' inputs and weights (in `defaults`), and of
    /// `matmul` operands (in `ops.matmul`).
    #[serde(default, skip_serializing_if = "Choice::is_inherit")]
    pub rotation: RotationSetting,
    /// SmoothQuant smoothing of `linear` layers' inputs and weights.
    #[serde(default, skip_serializing_if = "Choice::is_inherit")]
    pub smoothing: SmoothingSetting,
    /// GPTQ of `linear` layers' weights.
    #[serde(default, skip_serializing_if = "Choice::is_inherit")]
    pub gptq: GptqSetting,
}

/// One per-layer override.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerRule {
    /// Glob on the full layer name (`*` matches any run of characters, dots included).
    pub pattern: String,
    /// Weight setting.
    #[serde(default, skip_serializing_if = "Setting::is_inherit")]
    pub weight: Setting,
    /// Bias setting.
    #[serde(default, skip_serializing_if = "Setting::is_inherit")]
    pub bias: Setting,
    /// Input setting.
    #[serde(default, skip_serializing_if = "Setting::is_inherit")]
    pub input: Setting,
    /// Output setting.
    #[serde(default, skip_serializing_if = "Setting::is_inherit")]
    pub output: Setting,
    /// Gradient format for this layer's quantizers in QAT.
    #[serde(default, skip_serializing_if = "Setting::is_inherit")]
    pub backward: Setting,
    /// The accumulator of this layer's dot products (`linear`, `matmul` and `conv2d` layers).
    #[serde(default, skip_serializing_if = "Choice::is_inherit")]
    pub accumulator: AccumulatorSetting,
    /// The Hadamard rotation of this layer's input and weight (`linear` layers) or operands
    /// (`matmul` layers).
    #[serde(default, skip_serializing_if = "Choice::is_inherit")]
    pub rotation: RotationSetting,
    /// SmoothQuant smoothing of this layer's input and weight (`linear` layers).
    #[serde(default, skip_serializing_if = "Choice::is_inherit")]
    pub smoothing: SmoothingSetting,
    /// GPTQ of this layer's weight (`linear` layers).
    #[serde(default, skip_serializing_if = "Choice::is_inherit")]
    pub gptq: GptqSetting,
}

fn yes() -> bool {
    true
}

/// The quantization config of a model. See the module docs for the YAML form and the rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantConfig {
    /// Defaults per role.
    #[serde(default)]
    pub defaults: RoleSettings,
    /// Defaults per op kind (`linear`, `conv2d`, `softmax`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ops: BTreeMap<String, RoleSettings>,
    /// Per-layer overrides, in order; the last match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerRule>,
    /// Layers (globs) left in FP32.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip: Vec<String>,
    /// Whether the first layer with weights is quantized.
    #[serde(default = "yes")]
    pub quantize_first_layer: bool,
    /// Whether the last layer with weights is quantized.
    #[serde(default = "yes")]
    pub quantize_last_layer: bool,
    /// Op kinds that are quantized at all (absent: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantized_ops: Option<Vec<String>>,
    /// Gradient format of every quantizer in QAT (absent or null: gradients stay f32).
    #[serde(default, skip_serializing_if = "Setting::is_inherit")]
    pub backward: Setting,
    /// Where the config came from (file path and text), for error messages. Not serialized.
    #[serde(skip)]
    source: Option<Source>,
}

#[derive(Clone, Debug, PartialEq)]
struct Source {
    file: String,
    text: String,
}

impl Default for QuantConfig {
    fn default() -> Self {
        QuantConfig {
            defaults: RoleSettings::default(),
            ops: BTreeMap::new(),
            layers: Vec::new(),
            skip: Vec::new(),
            quantize_first_layer: true,
            quantize_last_layer: true,
            quantized_ops: None,
            backward: Setting::Inherit,
            source: None,
        }
    }
}

/// How an op kind's roles take their defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpClass {
    /// Ops with weights (linear, conv, embedding, norms with affine parameters).
    Weighted,
    /// Ops without weights whose inputs hardware quantizes (matmul, add, concat, pooling).
    Structural,
    /// Activation functions: `defaults.activation` applies to their input and output.
    Activation,
}

/// The resolved quantizers of one layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ResolvedLayer {
    /// Weight spec.
    pub weight: Option<QuantSpec>,
    /// Bias spec.
    pub bias: Option<QuantSpec>,
    /// Spec of every input.
    pub input: Option<QuantSpec>,
    /// Output spec.
    pub output: Option<QuantSpec>,
    /// Gradient spec (QAT).
    pub backward: Option<QuantSpec>,
    /// The accumulator of the layer's dot products (`linear`, `matmul` and `conv2d` only).
    pub accumulator: Option<Accumulator>,
    /// The rotation of the layer's input and weight (`linear`) or operands (`matmul`).
    pub rotation: Option<Rotation>,
    /// SmoothQuant smoothing of the layer's input and weight (`linear` only).
    pub smoothing: Option<Smoothing>,
    /// GPTQ of the layer's weight (`linear` only).
    pub gptq: Option<Gptq>,
}

impl ResolvedLayer {
    /// Whether any quantizer is on.
    pub fn is_quantized(&self) -> bool {
        self.weight.is_some()
            || self.bias.is_some()
            || self.input.is_some()
            || self.output.is_some()
            || self.accumulator.is_some()
            || self.rotation.is_some()
            || self.smoothing.is_some()
            || self.gptq.is_some()
    }
}

/// A config checked against the op kinds of a registry, with compiled globs.
#[derive(Clone, Debug)]
pub struct CompiledConfig {
    config: QuantConfig,
    layer_globs: Vec<GlobMatcher>,
    skip_globs: Vec<GlobMatcher>,
}

impl QuantConfig {
    /// Parses a config from YAML text; `file` names it in errors.
    pub fn from_yaml(text: &str, file: &str) -> Result<QuantConfig> {
        let mut c: QuantConfig = serde_yaml_ng::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line());
            NnError::Config {
                file: file.to_string(),
                line,
                key: String::new(),
                message: e.to_string(),
            }
        })?;
        c.source = Some(Source {
            file: file.to_string(),
            text: text.to_string(),
        });
        Ok(c)
    }

    /// Reads and parses a YAML config file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<QuantConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| NnError::Config {
            file: path.display().to_string(),
            line: None,
            key: String::new(),
            message: format!("cannot read the config: {e}"),
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// The config as YAML (the fully written-out form, for run directories).
    pub fn to_yaml(&self) -> Result<String> {
        serde_yaml_ng::to_string(self).map_err(|e| NnError::Config {
            file: self.file().to_string(),
            line: None,
            key: String::new(),
            message: e.to_string(),
        })
    }

    /// A config that quantizes weights and inputs of every op with `spec` (and nothing else).
    pub fn weights_and_inputs(weight: QuantSpec, input: QuantSpec) -> QuantConfig {
        let mut c = QuantConfig::default();
        c.defaults.weight = Setting::Spec(weight);
        c.defaults.input = Setting::Spec(input);
        c
    }

    pub(crate) fn file(&self) -> &str {
        self.source.as_ref().map_or("<config>", |s| s.file.as_str())
    }

    /// The 1-based line on which `needle` first appears in the source text.
    pub(crate) fn line_of(&self, needle: &str) -> Option<usize> {
        let text = &self.source.as_ref()?.text;
        text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
    }

    pub(crate) fn error(&self, key: String, needle: &str, message: String) -> NnError {
        NnError::Config {
            file: self.file().to_string(),
            line: self.line_of(needle),
            key,
            message,
        }
    }

    /// Checks op kinds against `known_kinds` and compiles the globs.
    pub fn compile(&self, known_kinds: &[&str]) -> Result<CompiledConfig> {
        let known = known_kinds.join(", ");
        for kind in self.ops.keys() {
            if !known_kinds.contains(&kind.as_str()) {
                return Err(self.error(
                    format!("ops.{kind}"),
                    &format!("{kind}:"),
                    format!("unknown op kind `{kind}` (known: {known})"),
                ));
            }
        }
        for (i, kind) in self.quantized_ops.iter().flatten().enumerate() {
            if !known_kinds.contains(&kind.as_str()) {
                return Err(self.error(
                    format!("quantized_ops[{i}]"),
                    kind,
                    format!("unknown op kind `{kind}` (known: {known})"),
                ));
            }
        }
        let glob = |key: String, pat: &str| {
            Glob::new(pat)
                .map(|g| g.compile_matcher())
                .map_err(|e| self.error(key, pat, format!("bad pattern `{pat}`: {e}")))
        };
        let layer_globs = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, r)| glob(format!("layers[{i}].pattern"), &r.pattern))
            .collect::<Result<Vec<_>>>()?;
        let skip_globs = self
            .skip
            .iter()
            .enumerate()
            .map(|(i, p)| glob(format!("skip[{i}]"), p))
            .collect::<Result<Vec<_>>>()?;
        Ok(CompiledConfig {
            config: self.clone(),
            layer_globs,
            skip_globs,
        })
    }
}

impl CompiledConfig {
    /// The config.
    pub fn config(&self) -> &QuantConfig {
        &self.config
    }

    /// The quantizers of layer `name` of op `kind` and class `class` (before the first/last
    /// switches, which need the whole model).
    pub fn resolve(&self, name: &str, kind: &str, class: OpClass) -> ResolvedLayer {
        let c = &self.config;
        let mut r = ResolvedLayer::default();
        if let Some(ops) = &c.quantized_ops
            && !ops.iter().any(|k| k == kind)
        {
            return r;
        }
        if self.skip_globs.iter().any(|g| g.is_match(name)) {
            return r;
        }
        match class {
            OpClass::Activation => {
                c.defaults.activation.apply(&mut r.input);
                c.defaults.activation.apply(&mut r.output);
            }
            OpClass::Weighted | OpClass::Structural => {
                c.defaults.input.apply(&mut r.input);
                c.defaults.output.apply(&mut r.output);
            }
        }
        if class == OpClass::Weighted {
            c.defaults.weight.apply(&mut r.weight);
            c.defaults.bias.apply(&mut r.bias);
        }
        c.backward.apply(&mut r.backward);
        c.defaults.accumulator.apply(&mut r.accumulator);
        if kind == "linear" {
            c.defaults.rotation.apply(&mut r.rotation);
        }
        c.defaults.smoothing.apply(&mut r.smoothing);
        c.defaults.gptq.apply(&mut r.gptq);
        if let Some(op) = c.ops.get(kind) {
            op.weight.apply(&mut r.weight);
            op.bias.apply(&mut r.bias);
            op.input.apply(&mut r.input);
            op.output.apply(&mut r.output);
            op.accumulator.apply(&mut r.accumulator);
            op.rotation.apply(&mut r.rotation);
            op.smoothing.apply(&mut r.smoothing);
            op.gptq.apply(&mut r.gptq);
        }
        for (rule, g) in c.layers.iter().zip(&self.layer_globs) {
            if g.is_match(name) {
                rule.weight.apply(&mut r.weight);
                rule.bias.apply(&mut r.bias);
                rule.input.apply(&mut r.input);
                rule.output.apply(&mut r.output);
                rule.backward.apply(&mut r.backward);
                rule.accumulator.apply(&mut r.accumulator);
                rule.rotation.apply(&mut r.rotation);
                rule.smoothing.apply(&mut r.smoothing);
                rule.gptq.apply(&mut r.gptq);
            }
        }
        if !ACCUMULATING_OPS.contains(&kind) {
            r.accumulator = None;
        }
        if !ROTATING_OPS.contains(&kind) {
            r.rotation = None;
        }
        if !SMOOTHING_OPS.contains(&kind) {
            r.smoothing = None;
        }
        if !GPTQ_OPS.contains(&kind) {
            r.gptq = None;
        }
        if class != OpClass::Weighted {
            r.weight = None;
            r.bias = None;
        }
        r
    }

    /// Errors for every `layers` pattern and `skip` entry that matches none of `names`.
    pub fn check_patterns_match<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<()> {
        let c = &self.config;
        for (i, (rule, g)) in c.layers.iter().zip(&self.layer_globs).enumerate() {
            if !names.clone().into_iter().any(|n| g.is_match(n)) {
                return Err(c.error(
                    format!("layers[{i}].pattern"),
                    &rule.pattern,
                    format!("pattern `{}` matches no layer of the model (`lowbit explain` lists the layer names)", rule.pattern),
                ));
            }
        }
        for (i, (p, g)) in c.skip.iter().zip(&self.skip_globs).enumerate() {
            if !names.clone().into_iter().any(|n| g.is_match(n)) {
                return Err(c.error(
                    format!("skip[{i}]"),
                    p,
                    format!("skip pattern `{p}` matches no layer of the model"),
                ));
            }
        }
        Ok(())
    }
}
