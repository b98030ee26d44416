//! BatchNorm folded into the convolution before it, during QAT and in the low-bit checkpoint
//! (`--bn fold`).
//!
//! Each convolution that a batch norm directly follows (in build order, with as many channels
//! as the convolution has outputs) becomes a [`FoldedConv2d`]: it computes
//! `conv(x, Q(W·s)) + (b − μ)·s + β` with `s = γ/√(σ² + ε)` (lowbit-nn's
//! [`fold_batch_norm`]), the folded weight quantized by the convolution's weight quantizer and
//! the folded bias by its bias quantizer (if the config gives it one). The running statistics
//! μ and σ² are frozen (the "freeze BN statistics" QAT recipe: they are the FP32 model's and
//! are no longer updated); γ, β and W are trained through the fold. The batch norm itself
//! becomes an identity layer with the same name and quantizers, so its input quantizer now
//! sees the folded convolution's output (the accumulator requantized, as on inference
//! hardware).
//!
//! The deployed form ([`deployed_registry`]) is a plain convolution with a bias: weight
//! `Q(W·s)`, bias `(b − μ)·s + β`, and identity batch norms — what `quantized/` holds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lowbit_models::FashionCnn;
use lowbit_nn::layers::{QBatchNorm2d, QConv2d, fold_batch_norm};
use lowbit_nn::{
    LayerQuant, NnError, OpFactory, OpParams, QBuilder, QuantConfig, QuantOp, Registry,
    ResolvedLayer,
};
use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};
use crate::models::model_err;

/// How QAT treats batch norm (`--bn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BnMode {
    /// Training mode: batch statistics, running statistics updated (the default).
    Train,
    /// Folded into the convolution before it, running statistics frozen.
    Fold,
}

impl BnMode {
    /// Parses `--bn`.
    pub fn parse(s: &str) -> Result<BnMode> {
        match s {
            "train" => Ok(BnMode::Train),
            "fold" => Ok(BnMode::Fold),
            other => Err(CliError::Usage(format!(
                "--bn {other}: expected train or fold"
            ))),
        }
    }
}

/// A convolution and the batch norm folded into it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Pair {
    /// The convolution's layer name.
    pub conv: String,
    /// The batch norm's layer name.
    pub bn: String,
    /// The batch norm's ε.
    pub eps: f64,
}

/// Records what a factory builds (name, kind, params), then builds it.
struct Recording {
    inner: Arc<dyn OpFactory>,
    log: Arc<Mutex<Vec<(String, String, OpParams)>>>,
}

impl OpFactory for Recording {
    fn class(&self) -> lowbit_nn::OpClass {
        self.inner.class()
    }
    fn build(
        &self,
        params: &OpParams,
        vb: &VarBuilder,
        quant: LayerQuant,
    ) -> lowbit_nn::Result<Arc<dyn QuantOp>> {
        if let Ok(mut l) = self.log.lock() {
            l.push((quant.name.clone(), quant.kind.clone(), params.clone()));
        }
        self.inner.build(params, vb, quant)
    }
}

/// The conv → batch norm pairs of `fashion_cnn`: every `conv2d` that a `batch_norm2d` with
/// as many channels directly follows in build order. Every batch norm must have one.
pub(crate) fn fashion_pairs() -> Result<Vec<Pair>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let base = Registry::default();
    let mut rec = Registry::empty();
    for kind in base.kinds() {
        rec.register(
            kind,
            Arc::new(Recording {
                inner: base.get(kind)?.clone(),
                log: log.clone(),
            }),
        );
    }
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    FashionCnn::build(QBuilder::new(vb, &QuantConfig::default(), rec)?).map_err(model_err)?;
    let log = log
        .lock()
        .map_err(|_| CliError::Other("the layer log is poisoned".into()))?;
    let mut pairs = Vec::new();
    for (i, (name, kind, params)) in log.iter().enumerate() {
        let OpParams::BatchNorm2d { channels, eps } = *params else {
            continue;
        };
        debug_assert_eq!(kind, "batch_norm2d");
        let conv = i.checked_sub(1).and_then(|j| log.get(j)).filter(|(_, k, p)| {
            k == "conv2d"
                && matches!(p, OpParams::Conv2d { out_channels, .. } if *out_channels == channels)
        });
        let Some((conv, _, _)) = conv else {
            return Err(CliError::Other(format!(
                "--bn fold: batch norm `{name}` does not directly follow a convolution with {channels} output channels"
            )));
        };
        pairs.push(Pair {
            conv: conv.clone(),
            bn: name.clone(),
            eps,
        });
    }
    Ok(pairs)
}

/// A convolution with the batch norm after it folded in (see the module docs): lowbit-nn's
/// `QConv2d` (its parameters, config and quantizers) and the batch norm.
#[derive(Debug)]
pub(crate) struct FoldedConv2d {
    conv: QConv2d,
    bn: QBatchNorm2d,
}

impl FoldedConv2d {
    fn build(
        params: &OpParams,
        vb: &VarBuilder,
        quant: LayerQuant,
        pair: &Pair,
    ) -> lowbit_nn::Result<FoldedConv2d> {
        let OpParams::Conv2d { out_channels, .. } = *params else {
            return Err(NnError::layer(
                &quant.name,
                format!("cannot fold a batch norm into {params:?}"),
            ));
        };
        let context = quant.context().clone();
        let conv = QConv2d::build(params, vb, quant)?;
        // The batch norm's parameters, through a quantizer-less LayerQuant of its own.
        let bn_quant =
            LayerQuant::new(&pair.bn, "batch_norm2d", &ResolvedLayer::default(), context);
        let bn = QBatchNorm2d::build(
            &OpParams::BatchNorm2d {
                channels: out_channels,
                eps: pair.eps,
            },
            &vb.root().pp(&pair.bn),
            bn_quant,
        )?;
        Ok(FoldedConv2d { conv, bn })
    }

    /// The folded weight `W·s` and bias `(b − μ)·s + β`, in FP32 (before quantization).
    pub fn folded(&self) -> lowbit_nn::Result<(Tensor, Tensor)> {
        fold_batch_norm(&self.conv.weight, self.conv.bias.as_ref(), &self.bn)
    }
}

impl QuantOp for FoldedConv2d {
    fn quant(&self) -> &LayerQuant {
        self.conv.quant()
    }

    fn compute(&self, inputs: &[Tensor]) -> lowbit_nn::Result<Tensor> {
        let (w, b) = self.folded()?;
        let q = self.conv.quant();
        let w = q.weight(&w)?;
        let b = q.bias(&b)?;
        // As lowbit-nn's QConv2d (candle_nn's Conv2d with a bias), so the deployed form gives
        // the same bits.
        Ok(candle_nn::Conv2d::new(w, Some(b), *self.conv.config()).forward(&inputs[0])?)
    }
}

/// A batch norm folded away: passes its input through (its input and output quantizers
/// still apply).
#[derive(Debug)]
struct FoldedAway {
    quant: LayerQuant,
}

impl QuantOp for FoldedAway {
    fn quant(&self) -> &LayerQuant {
        &self.quant
    }
    fn compute(&self, inputs: &[Tensor]) -> lowbit_nn::Result<Tensor> {
        Ok(inputs[0].clone())
    }
}

/// The folded convolutions of a model built by [`training_registry`], by layer name.
pub(crate) type Folded = Arc<Mutex<BTreeMap<String, Arc<FoldedConv2d>>>>;

/// The default registry with `conv2d` and `batch_norm2d` replaced: the convolutions of
/// `pairs` become [`FoldedConv2d`]s (recorded into `folded`), their batch norms identities.
pub(crate) fn training_registry(pairs: &[Pair], folded: Folded) -> Result<Registry> {
    let mut r = Registry::default();
    let conv = r.get("conv2d")?.clone();
    let bn = r.get("batch_norm2d")?.clone();
    let by_conv: BTreeMap<String, Pair> =
        pairs.iter().map(|p| (p.conv.clone(), p.clone())).collect();
    r.register_fn("conv2d", conv.class(), move |p, vb, q| {
        let Some(pair) = by_conv.get(&q.name) else {
            return conv.build(p, vb, q);
        };
        let name = q.name.clone();
        let op = Arc::new(FoldedConv2d::build(p, vb, q, pair)?);
        if let Ok(mut f) = folded.lock() {
            f.insert(name, op.clone());
        }
        Ok(op)
    });
    register_folded_away(&mut r, pairs, bn);
    Ok(r)
}

/// The registry of the deployed (folded) model: the convolutions of `pairs` are plain
/// `conv2d`s with a bias (the folded weight and bias are their parameters), their batch norms
/// identities.
pub(crate) fn deployed_registry(pairs: &[Pair]) -> Result<Registry> {
    let mut r = Registry::default();
    let conv = r.get("conv2d")?.clone();
    let bn = r.get("batch_norm2d")?.clone();
    let convs: std::collections::BTreeSet<String> = pairs.iter().map(|p| p.conv.clone()).collect();
    r.register_fn("conv2d", conv.class(), move |p, vb, q| {
        let p = match (p, convs.contains(&q.name)) {
            (OpParams::Conv2d { .. }, true) => {
                let mut p = p.clone();
                if let OpParams::Conv2d { bias, .. } = &mut p {
                    *bias = true;
                }
                p
            }
            _ => p.clone(),
        };
        conv.build(&p, vb, q)
    });
    register_folded_away(&mut r, pairs, bn);
    Ok(r)
}

fn register_folded_away(r: &mut Registry, pairs: &[Pair], bn: Arc<dyn OpFactory>) {
    let bns: std::collections::BTreeSet<String> = pairs.iter().map(|p| p.bn.clone()).collect();
    r.register_fn("batch_norm2d", bn.class(), move |p, vb, q| {
        if bns.contains(&q.name) {
            Ok(Arc::new(FoldedAway { quant: q }))
        } else {
            bn.build(p, vb, q)
        }
    });
}

/// A model trained with `--bn fold`: its pairs and folded convolutions.
#[derive(Debug)]
pub(crate) struct Folding {
    /// The pairs.
    pub pairs: Vec<Pair>,
    convs: BTreeMap<String, Arc<FoldedConv2d>>,
}

impl Folding {
    /// Builds `fashion_cnn` with `config` over `vm` with every batch norm folded.
    pub fn build_fashion(
        vm: &VarMap,
        config: &QuantConfig,
        dev: &Device,
    ) -> Result<(FashionCnn, Folding)> {
        let pairs = fashion_pairs()?;
        let folded: Folded = Arc::new(Mutex::new(BTreeMap::new()));
        let registry = training_registry(&pairs, folded.clone())?;
        let vb = VarBuilder::from_varmap(vm, DType::F32, dev);
        let model = FashionCnn::build(QBuilder::new(vb, config, registry)?).map_err(model_err)?;
        let convs = folded
            .lock()
            .map_err(|_| CliError::Other("the folded layers are poisoned".into()))?
            .clone();
        for p in &pairs {
            if !convs.contains_key(&p.conv) {
                return Err(CliError::Other(format!(
                    "--bn fold: convolution `{}` was not built",
                    p.conv
                )));
            }
        }
        Ok((model, Folding { pairs, convs }))
    }

    /// The parameters of the deployed model, from the training variables `vars`: the
    /// folded pairs' batch-norm tensors are gone, each folded convolution has its folded
    /// weight and bias.
    pub fn deploy(&self, mut vars: BTreeMap<String, Tensor>) -> Result<BTreeMap<String, Tensor>> {
        for p in &self.pairs {
            for t in ["weight", "bias", "running_mean", "running_var"] {
                vars.remove(&format!("{}.{t}", p.bn));
            }
            let conv = self.convs.get(&p.conv).ok_or_else(|| {
                CliError::Other(format!("--bn fold: no folded convolution `{}`", p.conv))
            })?;
            let (w, b) = conv.folded()?;
            vars.insert(format!("{}.weight", p.conv), w);
            vars.insert(format!("{}.bias", p.conv), b);
        }
        Ok(vars)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::qat::optim::AdamW;
    use crate::quantized_checkpoint::{load_quantized, save_quantized, vm_params};
    use candle_nn::{Optimizer, ParamsAdamW};
    use lowbit_models::FashionMnist;
    use lowbit_nn::{Mode, QuantModel};

    fn cfg() -> QuantConfig {
        QuantConfig::from_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../configs/qat/w4a8_int4.yaml"
        ))
        .unwrap()
    }

    fn batch(n: usize) -> (Tensor, Tensor) {
        let test = FashionMnist::committed_test(Some(n)).unwrap();
        let b = test
            .batches(n, &Device::Cpu)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        (b.images, b.labels)
    }

    fn folded_model(config: &QuantConfig) -> (FashionCnn, Folding, VarMap) {
        let dev = Device::Cpu;
        let mut vm = VarMap::new();
        FashionCnn::init_varmap(&vm, 0, &dev).unwrap();
        let (model, folding) = Folding::build_fashion(&vm, config, &dev).unwrap();
        vm.load(lowbit_models::fashion::weights_path()).unwrap();
        (model, folding, vm)
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn fashion_cnn_pairs_every_batch_norm_with_its_convolution() {
        let pairs = fashion_pairs().unwrap();
        let names: Vec<(&str, &str)> = pairs
            .iter()
            .map(|p| (p.conv.as_str(), p.bn.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("conv1", "bn1"),
                ("layer1.0.conv1", "layer1.0.bn1"),
                ("layer1.0.conv2", "layer1.0.bn2"),
                ("layer2.0.downsample.0", "layer2.0.downsample.1"),
                ("layer2.0.conv1", "layer2.0.bn1"),
                ("layer2.0.conv2", "layer2.0.bn2"),
            ]
        );
        assert!(
            pairs
                .iter()
                .all(|p| p.eps == lowbit_models::fashion::BN_EPS)
        );
    }

    /// With the quantizers off, the folded model is the unfolded one in eval mode up to float
    /// rounding (the fold reorders a multiplication).
    #[test]
    fn folded_fp32_forward_equals_unfolded_eval_forward() {
        let config = cfg();
        let (folded, _, _) = folded_model(&config);
        let plain = FashionCnn::load_default(&config, &Device::Cpu).unwrap();
        folded.layers().set_mode(Mode::Fp32);
        plain.layers().set_mode(Mode::Fp32);
        let (x, _) = batch(64);
        let a = values(&folded.forward(&x).unwrap());
        let b = values(&plain.forward(&x).unwrap());
        let worst = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs() / q.abs().max(1.0))
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "largest relative difference {worst}");
        assert_ne!(a, b, "the fold should reorder the arithmetic somewhere");
    }

    /// QAT steps through the fold lower the loss; the running statistics stay frozen while
    /// γ, β and the weights move.
    #[test]
    fn a_folded_qat_step_lowers_the_loss_with_frozen_statistics() {
        let (model, _, vm) = folded_model(&cfg());
        let (x, y) = batch(128);
        let loss = |m: &FashionCnn| {
            let l = candle_nn::loss::cross_entropy(&m.forward(&x).unwrap(), &y).unwrap();
            l.to_scalar::<f32>().unwrap()
        };
        let before = loss(&model);
        // Copies (the tensors of a VarMap share the variables' storage).
        let snapshot = |vm: &VarMap| -> BTreeMap<String, Vec<f32>> {
            vm_params(vm)
                .unwrap()
                .iter()
                .map(|(k, t)| (k.clone(), values(t)))
                .collect()
        };
        let stats_before = snapshot(&vm);
        let vars = FashionCnn::trainable_vars(&vm).unwrap();
        let mut opt = AdamW::new(
            vars,
            ParamsAdamW {
                lr: 1e-4,
                ..Default::default()
            },
        )
        .unwrap();
        model.context().set_training(true);
        for _ in 0..5 {
            let l = candle_nn::loss::cross_entropy(&model.forward(&x).unwrap(), &y).unwrap();
            opt.backward_step(&l).unwrap();
        }
        model.context().set_training(false);
        let after = loss(&model);
        assert!(after < before, "loss {before} → {after}");
        let stats_after = snapshot(&vm);
        for (k, v) in &stats_before {
            let same = *v == stats_after[k];
            if k.ends_with(".running_mean") || k.ends_with(".running_var") {
                assert!(same, "{k} changed");
            } else if k.starts_with("bn1.") || k.starts_with("conv1.") {
                assert!(!same, "{k} did not move");
            }
        }
    }

    /// The low-bit checkpoint of a folded model holds the folded convolutions (weights
    /// quantized, biases in FP32, no batch norm) and reloads to the same logits, bit for bit.
    #[test]
    fn folded_low_bit_checkpoint_reloads_to_identical_logits() {
        let config = cfg();
        let (model, folding, vm) = folded_model(&config);
        let tmp = tempfile::tempdir().unwrap();
        let params = folding.deploy(vm_params(&vm).unwrap()).unwrap();
        let bits = save_quantized(&model, &params, tmp.path(), &folding.pairs).unwrap();
        assert!(bits > 4.0 && bits < 5.0, "{bits}");
        let rest =
            candle_core::safetensors::load(tmp.path().join("fp32.safetensors"), &Device::Cpu)
                .unwrap();
        assert!(rest.contains_key("conv1.bias") && rest.contains_key("layer2.0.downsample.0.bias"));
        assert!(
            !rest
                .keys()
                .any(|k| k.contains("bn") || k.contains("downsample.1"))
        );
        assert!(tmp.path().join("conv1.weight.safetensors").exists());
        let reloaded = load_quantized(tmp.path(), &config, &Device::Cpu).unwrap();
        let (x, _) = batch(200);
        let a = values(&model.forward(&x).unwrap());
        let b = values(&reloaded.forward(&x).unwrap());
        let bits_of = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits_of(&a), bits_of(&b));
        // The checkpoint quantized the folded weight, not the raw one.
        let q = lowbit_quant::QuantizedTensor::load(tmp.path().join("conv1.weight.safetensors"))
            .unwrap()
            .dequantize()
            .unwrap();
        let raw = values(&vm_params(&vm).unwrap()["conv1.weight"]);
        let folded = values(&params["conv1.weight"]);
        let err = |r: &[f32]| r.iter().zip(&q).map(|(a, b)| (a - b).abs()).sum::<f32>();
        assert!(
            err(&folded) < err(&raw),
            "{} vs {}",
            err(&folded),
            err(&raw)
        );
    }
}
