//! The static workflow on a whole model: calibrate on N batches → freeze → evaluate, with the
//! frozen scales saved to and loaded from a JSON file next to the config. Layers that smooth
//! (SmoothQuant) or run GPTQ first observe FP32 passes ([`LayerTable::begin_observation`],
//! [`LayerTable::finish_observation`]); the quantizers then calibrate on smoothed tensors and
//! GPTQ weights. GPTQ weights are saved beside the JSON file, one safetensors file per layer
//! in `<config>.scales.gptq/`.

use std::collections::BTreeMap;
use std::path::Path;

use lowbit_quant::{Frozen, Method};
use serde::{Deserialize, Serialize};

use crate::builder::LayerTable;
use crate::context::Mode;
use crate::error::{NnError, Result};
use crate::quantizer::Role;
use crate::smoothing::SmoothingFactors;

/// Frozen scales of a model: layer name → role → spec and scales.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StaticScales {
    /// Format version of the file.
    pub version: u32,
    /// The scales.
    pub layers: BTreeMap<String, BTreeMap<Role, Frozen>>,
    /// SmoothQuant factors of the layers that smooth: layer name → factors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub smoothing: BTreeMap<String, SmoothingFactors>,
    /// The layers with a GPTQ weight (their files are in the `.gptq` directory beside the
    /// JSON file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gptq_layers: Vec<String>,
    /// GPTQ weights: layer name → codes and scales (not in the JSON; see `gptq_layers`).
    #[serde(skip)]
    pub gptq: BTreeMap<String, lowbit_quant::QuantizedTensor>,
}

/// What [`LayerTable::finish_observation`] computed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observations {
    /// SmoothQuant factors, by layer.
    pub smoothing: BTreeMap<String, SmoothingFactors>,
    /// GPTQ weights, by layer.
    pub gptq: BTreeMap<String, lowbit_quant::QuantizedTensor>,
}

impl StaticScales {
    /// The conventional path of the scales file of a config: `config.yaml` → `config.scales.json`.
    pub fn path_for_config(config: &Path) -> std::path::PathBuf {
        config.with_extension("scales.json")
    }

    /// The directory of a scales file's GPTQ weights: `x.scales.json` → `x.scales.gptq`.
    pub fn gptq_dir(path: &Path) -> std::path::PathBuf {
        path.with_extension("gptq")
    }

    /// Writes the file (atomically: a temporary file renamed over the target), and the GPTQ
    /// weights, one `<layer>.safetensors` each, into [`gptq_dir`](Self::gptq_dir).
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |p: &Path, e: std::io::Error| NnError::Io {
            path: p.display().to_string(),
            message: e.to_string(),
        };
        // The JSON lists the GPTQ layers; their codes go to the files (no copy of them here).
        let doc = StaticScales {
            version: self.version,
            layers: self.layers.clone(),
            smoothing: self.smoothing.clone(),
            gptq_layers: self.gptq.keys().cloned().collect(),
            gptq: BTreeMap::new(),
        };
        if !self.gptq.is_empty() {
            let dir = Self::gptq_dir(path);
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            for (name, t) in &self.gptq {
                check_file_name(name, path)?;
                let f = dir.join(format!("{name}.safetensors"));
                t.save(&f).map_err(|e| NnError::Io {
                    path: f.display().to_string(),
                    message: e.to_string(),
                })?;
            }
        }
        let text = serde_json::to_string_pretty(&doc).map_err(|e| NnError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(path, e))
    }

    /// Reads a file (and the GPTQ weights it lists).
    pub fn load(path: &Path) -> Result<StaticScales> {
        let text = std::fs::read_to_string(path).map_err(|e| NnError::Io {
            path: path.display().to_string(),
            message: format!("cannot read scales: {e}"),
        })?;
        let mut s: StaticScales = serde_json::from_str(&text).map_err(|e| NnError::Io {
            path: path.display().to_string(),
            message: format!("bad scales file: {e}"),
        })?;
        let dir = Self::gptq_dir(path);
        for name in &s.gptq_layers {
            check_file_name(name, path)?;
            let f = dir.join(format!("{name}.safetensors"));
            let t = lowbit_quant::QuantizedTensor::load(&f).map_err(|e| NnError::Io {
                path: f.display().to_string(),
                message: format!("GPTQ weight of `{name}`: {e}"),
            })?;
            s.gptq.insert(name.clone(), t);
        }
        Ok(s)
    }
}

/// A layer name used as a file name must stay in its directory.
fn check_file_name(name: &str, path: &Path) -> Result<()> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
        return Err(NnError::Io {
            path: path.display().to_string(),
            message: format!("GPTQ layer name `{name}` cannot be a file name"),
        });
    }
    Ok(())
}

impl LayerTable {
    /// Whether some enabled layer smooths or runs GPTQ (needs
    /// [`begin_observation`](Self::begin_observation) before calibration).
    pub fn observes(&self) -> bool {
        self.layers().iter().any(|l| l.op.quant().observes())
    }

    /// Starts the FP32 observation pass: every layer that smooths or runs GPTQ forgets what it
    /// saw, and the model switches to [`Mode::Fp32`] (smoothing factors and GPTQ Hessians come
    /// from the FP32 model's activations). Run forward passes next, then
    /// [`finish_observation`](Self::finish_observation).
    pub fn begin_observation(&self) -> Result<()> {
        for l in self.layers() {
            l.op.quant().begin_observation()?;
        }
        self.set_mode(Mode::Fp32);
        Ok(())
    }

    /// Computes and installs every smoothing layer's factors and every GPTQ layer's weight
    /// from what they observed, and returns them. Leaves the mode as it is ([`Mode::Fp32`]);
    /// calibrate the quantizers next ([`begin_calibration`](Self::begin_calibration)), which
    /// then see smoothed tensors and GPTQ weights.
    pub fn finish_observation(&self) -> Result<Observations> {
        let mut out = Observations::default();
        self.finish_observation_into(&mut out, |_| true)?;
        Ok(out)
    }

    /// [`finish_observation`](Self::finish_observation) of the layers `which` selects, into
    /// `out`.
    fn finish_observation_into(
        &self,
        out: &mut Observations,
        which: impl Fn(&str) -> bool,
    ) -> Result<()> {
        for l in self.layers().iter().filter(|l| which(&l.name)) {
            let q = l.op.quant();
            if let Some(f) = q.freeze_smoothing()? {
                out.smoothing.insert(l.name.clone(), f);
            }
            if let Some(t) = q.freeze_gptq()? {
                out.gptq.insert(l.name.clone(), t);
            }
        }
        Ok(())
    }

    /// The whole observation step on the batches `pass` runs: [`begin_observation`], a pass,
    /// [`finish_observation`], and for GPTQ layers with `sequential: true` the reference's
    /// order: they are taken in the order their inputs came, in groups of consecutive layers
    /// that read the same tensor (q, k and v), and each group after the first observes one
    /// more FP32 pass in which every GPTQ weight installed so far stands in for its FP32
    /// weight (activations unquantized, as in the reference). Leaves the model in
    /// [`Mode::Fp32`], as `finish_observation` does.
    ///
    /// [`begin_observation`]: Self::begin_observation
    /// [`finish_observation`]: Self::finish_observation
    pub fn observe<E: From<NnError>>(
        &self,
        mut pass: impl FnMut() -> std::result::Result<(), E>,
    ) -> std::result::Result<Observations, E> {
        self.begin_observation()?;
        pass()?;
        let sequential = |l: &&crate::LayerEntry| {
            l.op.quant()
                .enabled_gptq()
                .is_some_and(|g: crate::Gptq| g.sequential)
        };
        let mut order: Vec<(u64, u64, &crate::LayerEntry)> = self
            .layers()
            .iter()
            .filter(sequential)
            .filter_map(|l| l.op.quant().gptq_first_input().map(|(o, f)| (o, f, l)))
            .collect();
        order.sort_by_key(|(o, _, _)| *o);
        let mut groups: Vec<Vec<&crate::LayerEntry>> = Vec::new();
        let mut last = None;
        for (_, f, l) in order {
            match groups.last_mut() {
                Some(g) if last == Some(f) => g.push(l),
                _ => groups.push(vec![l]),
            }
            last = Some(f);
        }
        let later: std::collections::BTreeSet<&str> = groups
            .iter()
            .skip(1)
            .flatten()
            .map(|l| l.name.as_str())
            .collect();
        let mut out = Observations::default();
        self.finish_observation_into(&mut out, |name| !later.contains(name))?;
        // Every GPTQ weight installed so far, and each one installed below, stands in for its
        // FP32 weight in the passes that follow.
        let result = (|| {
            if groups.len() > 1 {
                for l in self.layers() {
                    l.op.quant().set_gptq_substitute(true)?;
                }
            }
            for group in groups.iter().skip(1) {
                for l in group {
                    l.op.quant().begin_observation()?;
                }
                pass()?;
                self.finish_observation_into(&mut out, |name| {
                    group.iter().any(|l| l.name == name)
                })?;
            }
            Ok::<(), E>(())
        })();
        for l in self.layers() {
            l.op.quant().set_gptq_substitute(false)?;
        }
        result?;
        Ok(out)
    }

    /// Starts calibration: every activation quantizer gets a fresh calibrator using `method`,
    /// and the model switches to [`Mode::Calibrate`]. Run forward passes next.
    pub fn begin_calibration(&self, method: Method) -> Result<()> {
        for l in self.layers() {
            for q in l.op.quant().quantizers() {
                q.begin_calibration(method)?;
            }
        }
        self.set_mode(Mode::Calibrate);
        Ok(())
    }

    /// Starts calibration of the activation quantizers whose spec says `mode: static` only
    /// (what `lowbit calibrate` does): dynamic ones keep computing their scales from each
    /// tensor, as the config declares (an MX or per-token activation is dynamic in hardware;
    /// frozen, its scales would be tied to the calibration batches' shape). Switches to
    /// [`Mode::Calibrate`]; returns how many quantizers calibrate.
    pub fn begin_static_calibration(&self, method: Method) -> Result<usize> {
        let mut n = 0;
        for l in self.layers() {
            for q in l.op.quant().quantizers() {
                if q.spec().mode() == lowbit_quant::ScaleMode::Static {
                    q.begin_calibration(method)?;
                    n += usize::from(q.is_activation());
                }
            }
        }
        self.set_mode(Mode::Calibrate);
        Ok(n)
    }

    /// Freezes what the calibrators saw and switches to [`Mode::Quantize`]. Quantizers that
    /// saw no batch stay dynamic.
    pub fn freeze(&self) -> Result<StaticScales> {
        let mut out = StaticScales {
            version: 1,
            ..StaticScales::default()
        };
        for l in self.layers() {
            for q in l.op.quant().quantizers() {
                if let Some(f) = q.freeze()? {
                    out.layers
                        .entry(l.name.clone())
                        .or_default()
                        .insert(q.role(), f);
                }
            }
            if let Some(f) = l.op.quant().smoothing_factors() {
                out.smoothing.insert(l.name.clone(), f);
            }
            if let Some(t) = l.op.quant().gptq_weight() {
                out.gptq.insert(l.name.clone(), t);
            }
        }
        self.set_mode(Mode::Quantize);
        Ok(out)
    }

    /// Installs frozen scales; every entry must name a layer and role that has a quantizer.
    pub fn load_scales(&self, scales: &StaticScales) -> Result<()> {
        for (name, roles) in &scales.layers {
            let layer = self.get(name).ok_or_else(|| {
                NnError::layer(
                    name,
                    "the scales file has scales for this layer, but the model has no such layer",
                )
            })?;
            for (role, frozen) in roles {
                let q = layer
                    .op
                    .quant()
                    .quantizers()
                    .find(|q| q.role() == *role)
                    .ok_or_else(|| NnError::layer(name, format!("the scales file has {role} scales, but the config gives this layer no {role} quantizer")))?;
                q.load_frozen(frozen)?;
            }
        }
        for (name, f) in &scales.smoothing {
            let layer = self.get(name).ok_or_else(|| {
                NnError::layer(
                    name,
                    "the scales file has smoothing factors for this layer, but the model has no such layer",
                )
            })?;
            layer.op.quant().load_smoothing(f)?;
        }
        for (name, t) in &scales.gptq {
            let layer = self.get(name).ok_or_else(|| {
                NnError::layer(
                    name,
                    "the scales file has a GPTQ weight for this layer, but the model has no such layer",
                )
            })?;
            layer.op.quant().load_gptq(t)?;
        }
        Ok(())
    }
}
