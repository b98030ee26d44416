//! The optimizers of `lowbit qat`, with their state keyed by variable name so that a run can
//! be saved and resumed bit for bit (candle_nn's `AdamW` keeps its moments private).
//!
//! - [`AdamW`]: candle_nn's update, operation for operation (so a run gives the same bits as
//!   with `candle_nn::AdamW`), which is PyTorch's `torch.optim.AdamW` (decoupled weight decay
//!   `θ·(1 − lr·λ)`, bias-corrected moments, `ε` added to `√v̂`); one step count for all
//!   variables.
//! - [`Sgd`]: PyTorch's `torch.optim.SGD` without dampening, Nesterov or weight decay:
//!   `b ← μ·b + g` (`b ← g` on the first step), `θ ← θ − lr·b`; with momentum 0 it is
//!   candle_nn's `SGD`, `θ ← θ − lr·g`, bit for bit.
//!
//! Both implement [`candle_nn::Optimizer`], so `lowbit_models::fashion::train_epoch` drives
//! them. [`export`](AdamW::export) and [`import`](AdamW::import) move the state in and out as
//! named tensors (`<var>.exp_avg`, `<var>.exp_avg_sq`, `<var>.momentum_buffer`: PyTorch's
//! names) plus the step count.

use std::collections::{BTreeMap, BTreeSet};

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW};

/// A variable with its name (the checkpoint's tensor name).
pub(crate) type NamedVar = (String, Var);

/// Why a saved optimizer state does not fit the variables.
#[derive(Debug)]
pub(crate) struct StateMismatch(pub String);

impl std::fmt::Display for StateMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks that `state` holds exactly the tensors `expected` (name → shape) may hold: every
/// name in `required` present, nothing unknown, every shape right.
fn check_state(
    state: &BTreeMap<String, Tensor>,
    expected: &BTreeMap<String, Vec<usize>>,
    required: &BTreeSet<String>,
) -> Result<(), StateMismatch> {
    for name in required {
        if !state.contains_key(name) {
            return Err(StateMismatch(format!(
                "tensor `{name}` is missing (the run trained other variables)"
            )));
        }
    }
    for (name, t) in state {
        let Some(shape) = expected.get(name) else {
            return Err(StateMismatch(format!(
                "tensor `{name}` belongs to no variable this model trains"
            )));
        };
        if t.dims() != shape.as_slice() {
            return Err(StateMismatch(format!(
                "tensor `{name}` has shape {:?}, the variable has {shape:?}",
                t.dims()
            )));
        }
    }
    Ok(())
}

/// `vars` named by position (`"0"`, `"1"`, …), for [`Optimizer::new`].
fn by_position(vars: Vec<Var>) -> Vec<NamedVar> {
    vars.into_iter()
        .enumerate()
        .map(|(i, v)| (i.to_string(), v))
        .collect()
}

/// The state tensors `<name>.<key>` (for every key of `keys`) of named variables, with their
/// variable's shape.
fn expected_state<'a>(
    vars: impl Iterator<Item = (&'a str, &'a Var)>,
    keys: &[&str],
) -> BTreeMap<String, Vec<usize>> {
    let mut expected = BTreeMap::new();
    for (name, var) in vars {
        for k in keys {
            expected.insert(format!("{name}.{k}"), var.dims().to_vec());
        }
    }
    expected
}

#[derive(Debug)]
struct AdamVar {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
}

/// AdamW with exportable state (see the module docs).
#[derive(Debug)]
pub(crate) struct AdamW {
    vars: Vec<AdamVar>,
    step_t: usize,
    params: ParamsAdamW,
}

impl AdamW {
    /// AdamW over named variables (non-float ones are skipped, as candle_nn does).
    pub fn named(vars: Vec<NamedVar>, params: ParamsAdamW) -> candle_core::Result<AdamW> {
        let vars = vars
            .into_iter()
            .filter(|(_, var)| var.dtype().is_float())
            .map(|(name, var)| {
                let m = Tensor::zeros(var.shape(), var.dtype(), var.device())?;
                let v = Tensor::zeros(var.shape(), var.dtype(), var.device())?;
                Ok(AdamVar { name, var, m, v })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(AdamW {
            vars,
            step_t: 0,
            params,
        })
    }

    /// Steps taken.
    pub fn steps(&self) -> usize {
        self.step_t
    }

    /// The state: `<var>.exp_avg` and `<var>.exp_avg_sq` of every variable.
    pub fn export(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for v in &self.vars {
            out.insert(format!("{}.exp_avg", v.name), v.m.clone());
            out.insert(format!("{}.exp_avg_sq", v.name), v.v.clone());
        }
        out
    }

    /// Installs a state written by [`export`](AdamW::export) after `steps` steps: every
    /// variable's two moments must be there with its shape, and nothing else.
    pub fn import(
        &mut self,
        steps: usize,
        state: &BTreeMap<String, Tensor>,
    ) -> Result<(), StateMismatch> {
        let named = self.vars.iter().map(|v| (v.name.as_str(), &v.var));
        let expected = expected_state(named, &["exp_avg", "exp_avg_sq"]);
        let required = expected.keys().cloned().collect();
        check_state(state, &expected, &required)?;
        for v in &mut self.vars {
            if let (Some(m), Some(s)) = (
                state.get(&format!("{}.exp_avg", v.name)),
                state.get(&format!("{}.exp_avg_sq", v.name)),
            ) {
                v.m = m.clone();
                v.v = s.clone();
            }
        }
        self.step_t = steps;
        Ok(())
    }
}

impl Optimizer for AdamW {
    type Config = ParamsAdamW;

    /// Names the variables by position (`"0"`, `"1"`, …); [`AdamW::named`] gives real names.
    fn new(vars: Vec<Var>, params: ParamsAdamW) -> candle_core::Result<AdamW> {
        AdamW::named(by_position(vars), params)
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    /// candle_nn's `AdamW::step`, the same operations in the same order.
    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.step_t += 1;
        let lr = self.params.lr;
        let lr_lambda = lr * self.params.weight_decay;
        let (beta1, beta2) = (self.params.beta1, self.params.beta2);
        let scale_m = 1f64 / (1f64 - beta1.powi(self.step_t as i32));
        let scale_v = 1f64 / (1f64 - beta2.powi(self.step_t as i32));
        for v in &mut self.vars {
            let theta = &v.var;
            let Some(g) = grads.get(theta) else {
                continue;
            };
            let next_m = ((&v.m * beta1)? + (g * (1.0 - beta1))?)?;
            let next_v = ((&v.v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let m_hat = (&next_m * scale_m)?;
            let v_hat = (&next_v * scale_v)?;
            let next_theta = (theta.as_tensor() * (1f64 - lr_lambda))?;
            let adjusted_grad = (m_hat / (v_hat.sqrt()? + self.params.eps)?)?;
            let next_theta = (next_theta - (adjusted_grad * lr)?)?;
            v.m = next_m;
            v.v = next_v;
            theta.set(&next_theta)?;
        }
        Ok(())
    }
}

/// [`Sgd`]'s hyper-parameters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SgdParams {
    /// Learning rate.
    pub lr: f64,
    /// Momentum μ (0: plain SGD, candle_nn's).
    pub momentum: f64,
}

#[derive(Debug)]
struct SgdVar {
    name: String,
    var: Var,
    buf: Option<Tensor>,
}

/// SGD with optional momentum and exportable state (see the module docs).
#[derive(Debug)]
pub(crate) struct Sgd {
    vars: Vec<SgdVar>,
    step_t: usize,
    params: SgdParams,
}

impl Sgd {
    /// SGD over named variables (non-float ones are skipped, as candle_nn does).
    pub fn named(vars: Vec<NamedVar>, params: SgdParams) -> Sgd {
        let vars = vars
            .into_iter()
            .filter(|(_, var)| var.dtype().is_float())
            .map(|(name, var)| SgdVar {
                name,
                var,
                buf: None,
            })
            .collect();
        Sgd {
            vars,
            step_t: 0,
            params,
        }
    }

    /// Steps taken.
    pub fn steps(&self) -> usize {
        self.step_t
    }

    /// The state: `<var>.momentum_buffer` of every variable that has one (none without
    /// momentum or before the first step).
    pub fn export(&self) -> BTreeMap<String, Tensor> {
        self.vars
            .iter()
            .filter_map(|v| {
                v.buf
                    .as_ref()
                    .map(|b| (format!("{}.momentum_buffer", v.name), b.clone()))
            })
            .collect()
    }

    /// Installs a state written by [`export`](Sgd::export) after `steps` steps. With momentum
    /// and at least one step, every variable's buffer must be there.
    pub fn import(
        &mut self,
        steps: usize,
        state: &BTreeMap<String, Tensor>,
    ) -> Result<(), StateMismatch> {
        let named = self.vars.iter().map(|v| (v.name.as_str(), &v.var));
        let expected = expected_state(named, &["momentum_buffer"]);
        let required = if self.params.momentum != 0.0 && steps > 0 {
            expected.keys().cloned().collect()
        } else {
            BTreeSet::new()
        };
        check_state(state, &expected, &required)?;
        for v in &mut self.vars {
            v.buf = state.get(&format!("{}.momentum_buffer", v.name)).cloned();
        }
        self.step_t = steps;
        Ok(())
    }
}

impl Optimizer for Sgd {
    type Config = SgdParams;

    /// Names the variables by position; [`Sgd::named`] gives real names.
    fn new(vars: Vec<Var>, params: SgdParams) -> candle_core::Result<Sgd> {
        Ok(Sgd::named(by_position(vars), params))
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.step_t += 1;
        let (lr, mu) = (self.params.lr, self.params.momentum);
        for v in &mut self.vars {
            let Some(g) = grads.get(&v.var) else {
                continue;
            };
            if mu == 0.0 {
                // candle_nn's SGD::step.
                v.var.set(&v.var.sub(&(g * lr)?)?)?;
                continue;
            }
            let buf = match &v.buf {
                None => g.clone(),
                Some(b) => ((b * mu)? + g)?,
            };
            v.var.set(&v.var.sub(&(&buf * lr)?)?)?;
            v.buf = Some(buf);
        }
        Ok(())
    }
}

/// The optimizer of a run.
#[derive(Debug)]
pub(crate) enum Opt {
    /// `--optimizer adamw`.
    AdamW(AdamW),
    /// `--optimizer sgd`.
    Sgd(Sgd),
}

impl Opt {
    /// `adamw` or `sgd`.
    pub fn kind(&self) -> &'static str {
        match self {
            Opt::AdamW(_) => "adamw",
            Opt::Sgd(_) => "sgd",
        }
    }

    /// Steps taken.
    pub fn steps(&self) -> usize {
        match self {
            Opt::AdamW(o) => o.steps(),
            Opt::Sgd(o) => o.steps(),
        }
    }

    /// The state as named tensors.
    pub fn export(&self) -> BTreeMap<String, Tensor> {
        match self {
            Opt::AdamW(o) => o.export(),
            Opt::Sgd(o) => o.export(),
        }
    }

    /// Installs a state written by [`export`](Opt::export).
    pub fn import(
        &mut self,
        steps: usize,
        state: &BTreeMap<String, Tensor>,
    ) -> Result<(), StateMismatch> {
        match self {
            Opt::AdamW(o) => o.import(steps, state),
            Opt::Sgd(o) => o.import(steps, state),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use candle_core::Device;

    /// Variables and a loss whose gradients vary with the parameters (so the moments matter).
    fn vars() -> Vec<Var> {
        let dev = Device::Cpu;
        vec![
            Var::from_slice(&[0.5f32, -1.25, 2.0, 0.125], 4, &dev).unwrap(),
            Var::from_slice(&[1.0f32, -0.75, 0.3, -2.5, 0.01, 4.0], (2, 3), &dev).unwrap(),
        ]
    }

    fn loss(vs: &[Var], k: usize) -> Tensor {
        let a = vs[0].as_tensor().sqr().unwrap().sum_all().unwrap();
        let b = (vs[1].as_tensor() * (0.5 + k as f64))
            .unwrap()
            .sin()
            .unwrap()
            .sum_all()
            .unwrap();
        (a + b).unwrap()
    }

    /// The bit patterns of an F32 tensor's elements.
    fn tensor_bits(t: &Tensor) -> Vec<u32> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.into_iter().map(f32::to_bits).collect()
    }

    fn bits(vs: &[Var]) -> Vec<u32> {
        vs.iter().flat_map(|v| tensor_bits(v.as_tensor())).collect()
    }

    fn run<O: Optimizer>(opt: &mut O, vs: &[Var], from: usize, to: usize) {
        for k in from..to {
            opt.set_learning_rate(0.05 / (1 + k) as f64);
            opt.backward_step(&loss(vs, k)).unwrap();
        }
    }

    #[test]
    fn adamw_is_candle_nn_adamw_bit_for_bit() {
        let params = ParamsAdamW {
            lr: 0.05,
            weight_decay: 0.01,
            ..Default::default()
        };
        let (a, b) = (vars(), vars());
        let mut ours = AdamW::new(a.clone(), params.clone()).unwrap();
        let mut theirs = candle_nn::AdamW::new(b.clone(), params).unwrap();
        run(&mut ours, &a, 0, 7);
        run(&mut theirs, &b, 0, 7);
        assert_eq!(bits(&a), bits(&b));
    }

    /// The same on the real thing: QAT steps of fashion_cnn with the W4A8 config, batch norm
    /// in training mode (what `lowbit qat` did with candle_nn's AdamW).
    #[test]
    fn adamw_trains_fashion_cnn_like_candle_nn_adamw_bit_for_bit() {
        use lowbit_models::{FashionCnn, FashionMnist};
        let dev = Device::Cpu;
        let cfg = lowbit_nn::QuantConfig::from_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../configs/qat/w4a8_int4.yaml"
        ))
        .unwrap();
        let data = FashionMnist::committed_test(Some(192)).unwrap();
        let params = ParamsAdamW {
            lr: 5e-4,
            ..Default::default()
        };
        let lr = |step: usize| 5e-4 / (1 + step) as f64;
        let mut weights = Vec::new();
        for ours in [true, false] {
            let (model, mut vm) = FashionCnn::new_trainable(&cfg, 0, &dev).unwrap();
            vm.load(lowbit_models::fashion::weights_path()).unwrap();
            let vars = FashionCnn::trainable_vars(&vm).unwrap();
            let batches = data.shuffled_batches(64, 3, &dev).unwrap();
            if ours {
                let mut o = AdamW::new(vars, params.clone()).unwrap();
                lowbit_models::fashion::train_epoch(&model, &mut o, batches, &lr).unwrap();
            } else {
                let mut o = candle_nn::AdamW::new(vars, params.clone()).unwrap();
                lowbit_models::fashion::train_epoch(&model, &mut o, batches, &lr).unwrap();
            }
            let mut all: Vec<(String, Vec<u32>)> = vm
                .data()
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), tensor_bits(v.as_tensor())))
                .collect();
            all.sort();
            weights.push(all);
        }
        assert_eq!(weights[0], weights[1]);
    }

    #[test]
    fn sgd_without_momentum_is_candle_nn_sgd_bit_for_bit() {
        let (a, b) = (vars(), vars());
        let p = SgdParams {
            lr: 0.05,
            momentum: 0.0,
        };
        let mut ours = Sgd::new(a.clone(), p).unwrap();
        let mut theirs = candle_nn::SGD::new(b.clone(), 0.05).unwrap();
        run(&mut ours, &a, 0, 5);
        run(&mut theirs, &b, 0, 5);
        assert_eq!(bits(&a), bits(&b));
        assert!(ours.export().is_empty());
    }

    /// Stopping, exporting, importing into a fresh optimizer over copies of the variables and
    /// going on gives the same bits as never stopping.
    fn export_import_continues_exactly(make: impl Fn(Vec<Var>) -> Opt) {
        let straight = vars();
        let mut opt = make(straight.clone());
        for k in 0..6 {
            step(&mut opt, &straight, k);
        }
        let first = vars();
        let mut opt1 = make(first.clone());
        for k in 0..3 {
            step(&mut opt1, &first, k);
        }
        let (steps, state) = (opt1.steps(), opt1.export());
        assert_eq!(steps, 3);
        let resumed: Vec<Var> = first
            .iter()
            .map(|v| Var::from_tensor(&v.as_tensor().copy().unwrap()).unwrap())
            .collect();
        let mut opt2 = make(resumed.clone());
        opt2.import(steps, &state).unwrap();
        for k in 3..6 {
            step(&mut opt2, &resumed, k);
        }
        assert_eq!(bits(&straight), bits(&resumed));
        // A state for other variables is refused, naming the tensor.
        let mut other = make(vec![
            Var::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
        ]);
        let e = other.import(steps, &state).unwrap_err().to_string();
        assert!(e.contains("tensor `0."), "{e}");
    }

    fn step(opt: &mut Opt, vs: &[Var], k: usize) {
        match opt {
            Opt::AdamW(o) => run(o, vs, k, k + 1),
            Opt::Sgd(o) => run(o, vs, k, k + 1),
        }
    }

    #[test]
    fn adamw_state_export_import_continues_bit_for_bit() {
        export_import_continues_exactly(|v| {
            Opt::AdamW(AdamW::new(v, ParamsAdamW::default()).unwrap())
        });
    }

    #[test]
    fn sgd_momentum_state_export_import_continues_bit_for_bit() {
        export_import_continues_exactly(|v| {
            Opt::Sgd(
                Sgd::new(
                    v,
                    SgdParams {
                        lr: 0.1,
                        momentum: 0.9,
                    },
                )
                .unwrap(),
            )
        });
    }

    /// PyTorch's AdamW and SGD (momentum 0.9) on the same problem
    /// (scripts/golden/qat_optimizers.py): the same values up to float rounding (PyTorch
    /// orders some operations differently: `lerp`, `addcdiv`).
    #[test]
    fn optimizers_match_pytorch() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/qat_optimizers.json"
        ))
        .unwrap();
        let golden: serde_json::Value = serde_json::from_str(&text).unwrap();
        let floats = |v: &serde_json::Value| -> Vec<f32> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        };
        for case in golden["cases"].as_array().unwrap() {
            let dev = Device::Cpu;
            let var = Var::from_slice(&floats(&case["init"]), 6, &dev).unwrap();
            let mut opt = match case["optimizer"].as_str().unwrap() {
                "adamw" => Opt::AdamW(
                    AdamW::new(
                        vec![var.clone()],
                        ParamsAdamW {
                            lr: 0.0,
                            beta1: case["beta1"].as_f64().unwrap(),
                            beta2: case["beta2"].as_f64().unwrap(),
                            eps: case["eps"].as_f64().unwrap(),
                            weight_decay: case["weight_decay"].as_f64().unwrap(),
                        },
                    )
                    .unwrap(),
                ),
                "sgd" => Opt::Sgd(
                    Sgd::new(
                        vec![var.clone()],
                        SgdParams {
                            lr: 0.0,
                            momentum: case["momentum"].as_f64().unwrap(),
                        },
                    )
                    .unwrap(),
                ),
                other => panic!("{other}"),
            };
            for (k, s) in case["steps"].as_array().unwrap().iter().enumerate() {
                // loss = Σ c·θ + ½ Σ θ²: gradient c + θ, the same in both frameworks.
                let c = Tensor::from_vec(floats(&s["c"]), 6, &dev).unwrap();
                let t = var.as_tensor();
                let loss = ((t * &c).unwrap().sum_all().unwrap()
                    + (t.sqr().unwrap().sum_all().unwrap() * 0.5).unwrap())
                .unwrap();
                let lr = s["lr"].as_f64().unwrap();
                match &mut opt {
                    Opt::AdamW(o) => {
                        o.set_learning_rate(lr);
                        o.backward_step(&loss).unwrap();
                    }
                    Opt::Sgd(o) => {
                        o.set_learning_rate(lr);
                        o.backward_step(&loss).unwrap();
                    }
                }
                let got = var.as_tensor().to_vec1::<f32>().unwrap();
                for (i, (g, w)) in got.iter().zip(floats(&s["param"])).enumerate() {
                    assert!(
                        (g - w).abs() <= 2e-6 * w.abs().max(1.0),
                        "{} step {k} element {i}: {g} vs PyTorch {w}",
                        case["optimizer"]
                    );
                }
            }
        }
    }
}
