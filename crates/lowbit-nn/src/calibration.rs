//! The static workflow on a whole model: calibrate on N batches → freeze → evaluate, with the
//! frozen scales saved to and loaded from a JSON file next to the config. Layers that smooth
//! (SmoothQuant) first observe FP32 passes for their factors ([`LayerTable::begin_smoothing`],
//! [`LayerTable::freeze_smoothing`]); the quantizers then calibrate on smoothed tensors.

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
}

impl StaticScales {
    /// The conventional path of the scales file of a config: `config.yaml` → `config.scales.json`.
    pub fn path_for_config(config: &Path) -> std::path::PathBuf {
        config.with_extension("scales.json")
    }

    /// Writes the file (atomically: a temporary file renamed over the target).
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |e: std::io::Error| NnError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| NnError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads a file.
    pub fn load(path: &Path) -> Result<StaticScales> {
        let text = std::fs::read_to_string(path).map_err(|e| NnError::Io {
            path: path.display().to_string(),
            message: format!("cannot read scales: {e}"),
        })?;
        serde_json::from_str(&text).map_err(|e| NnError::Io {
            path: path.display().to_string(),
            message: format!("bad scales file: {e}"),
        })
    }
}

impl LayerTable {
    /// Whether some enabled layer smooths (needs [`begin_smoothing`](Self::begin_smoothing)
    /// before calibration).
    pub fn smooths(&self) -> bool {
        self.layers()
            .iter()
            .any(|l| l.op.quant().enabled_smoothing().is_some())
    }

    /// Starts observing smoothing statistics: every layer that smooths forgets what it saw,
    /// and the model switches to [`Mode::Fp32`] (the factors come from the FP32 model's
    /// activations). Run forward passes next, then [`freeze_smoothing`](Self::freeze_smoothing).
    pub fn begin_smoothing(&self) -> Result<()> {
        for l in self.layers() {
            l.op.quant().begin_smoothing()?;
        }
        self.set_mode(Mode::Fp32);
        Ok(())
    }

    /// Computes and installs every smoothing layer's factors from what it observed, and
    /// returns them. Leaves the mode as it is ([`Mode::Fp32`]); calibrate the quantizers next
    /// ([`begin_calibration`](Self::begin_calibration)), which then see smoothed tensors.
    pub fn freeze_smoothing(&self) -> Result<BTreeMap<String, SmoothingFactors>> {
        let mut out = BTreeMap::new();
        for l in self.layers() {
            if let Some(f) = l.op.quant().freeze_smoothing()? {
                out.insert(l.name.clone(), f);
            }
        }
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
            layers: BTreeMap::new(),
            smoothing: BTreeMap::new(),
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
        Ok(())
    }
}
