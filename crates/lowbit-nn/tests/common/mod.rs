//! Helpers shared by the layer tests (`layers.rs`, `conv_tiled.rs`, `depthwise.rs`): seeded
//! random values, tensor ↔ slice conversions, fake quantization with lowbit-quant, building one
//! op through `QBuilder`, and the convolution checks (an f64 reference with its error bound,
//! gradients through candle's autograd, timing).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Debug;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarBuilder;
use lowbit_nn::{OpParams, QBuilder, QuantConfig, Registry};
use lowbit_quant::QuantSpec;

/// A seeded generator (splitmix64) of values uniform in `[-1, 1)`.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `n` values in `[-scale, scale)`.
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }

    /// A CPU F32 tensor of `shape` with values in `[-scale, scale)`.
    pub fn tensor(&mut self, shape: &[usize], scale: f32) -> Tensor {
        let v = self.vec(shape.iter().product(), scale);
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }
}

/// A CPU F32 tensor of `shape` holding `v`.
pub fn tensor(v: &[f32], shape: [usize; 4]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &shape, &Device::Cpu).unwrap()
}

/// The elements of an F32 tensor.
pub fn f32s(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// The bit patterns of `v`.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The bit patterns of an F32 tensor's elements.
pub fn tensor_bits(t: &Tensor) -> Vec<u32> {
    bits(&f32s(t))
}

/// `t` fake-quantized by lowbit-quant with `spec`.
pub fn fq(spec: &str, t: &Tensor) -> Tensor {
    let spec: QuantSpec = spec.parse().unwrap();
    let v = f32s(t);
    let mut out = vec![0f32; v.len()];
    spec.fake_quantize(&v, t.dims(), &mut out).unwrap();
    Tensor::from_vec(out, t.dims(), &Device::Cpu).unwrap()
}

/// A built op and its layer table.
pub type Built = (
    std::sync::Arc<dyn lowbit_nn::QuantOp>,
    lowbit_nn::LayerTable,
);

/// Builds one op of `kind` named `name` from `params` over `vb`, with the config `yaml`.
pub fn build_op(vb: VarBuilder, yaml: &str, kind: &str, name: &str, params: OpParams) -> Built {
    let config = QuantConfig::from_yaml(yaml, "test.yaml").unwrap();
    let b = QBuilder::new(vb, &config, Registry::default()).unwrap();
    let op = b.op(kind, name, params).unwrap();
    (op, b.finish().unwrap())
}

/// A linear layer `l` with weight `wt` `[out, in]` and bias `bt`, built with the config `yaml`.
/// candle's own linear layer on `x`: `x Wᵀ + b`, the FP32 reference of a `linear` op.
pub fn fp32_linear(wt: &Tensor, bt: &Tensor, x: &Tensor) -> Tensor {
    use candle_core::Module;
    candle_nn::Linear::new(wt.clone(), Some(bt.clone()))
        .forward(x)
        .unwrap()
}

pub fn build_linear(yaml: &str, wt: &Tensor, bt: &Tensor) -> Built {
    let weights: std::collections::HashMap<String, Tensor> = [
        ("l.weight".to_string(), wt.clone()),
        ("l.bias".to_string(), bt.clone()),
    ]
    .into();
    let (out_dim, in_dim) = wt.dims2().unwrap();
    build_op(
        VarBuilder::from_tensors(weights, candle_core::DType::F32, &Device::Cpu),
        yaml,
        "linear",
        "l",
        OpParams::Linear {
            in_dim,
            out_dim,
            bias: true,
        },
    )
}

/// The sizes of a (grouped) 2-D convolution: input `[n, ci, h, w]`, weight
/// `[co, ci / groups, kh, kw]`.
#[derive(Clone, Copy, Debug)]
pub struct ConvDims {
    pub n: usize,
    pub ci: usize,
    pub co: usize,
    pub groups: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub pad: usize,
    pub stride: usize,
    pub dil: usize,
}

impl ConvDims {
    /// The output length along an axis of `len` with kernel size `k`, if the kernel fits.
    pub fn out(&self, len: usize, k: usize) -> Option<usize> {
        let span = self.dil * (k - 1) + 1;
        (len + 2 * self.pad >= span).then(|| (len + 2 * self.pad - span) / self.stride + 1)
    }
}

/// The f64 reference: the output, its gradients for the upstream gradient `r`
/// (`loss = Σ y·r`), and for each the sum of the absolute terms.
pub struct Reference {
    pub y: Vec<f64>,
    pub y_abs: Vec<f64>,
    pub gx: Vec<f64>,
    pub gx_abs: Vec<f64>,
    pub gw: Vec<f64>,
    pub gw_abs: Vec<f64>,
}

/// The convolution `d` of `x` by `w` and its gradients for `r`, in f64, term by term.
pub fn reference(d: &ConvDims, x: &[f32], w: &[f32], r: &[f32]) -> Reference {
    let (oh, ow) = (d.out(d.h, d.kh).unwrap(), d.out(d.w, d.kw).unwrap());
    let ny = d.n * d.co * oh * ow;
    let (cig, cog) = (d.ci / d.groups, d.co / d.groups);
    let mut out = Reference {
        y: vec![0.0; ny],
        y_abs: vec![0.0; ny],
        gx: vec![0.0; x.len()],
        gx_abs: vec![0.0; x.len()],
        gw: vec![0.0; w.len()],
        gw_abs: vec![0.0; w.len()],
    };
    for b in 0..d.n {
        for o in 0..d.co {
            let group = o / cog;
            for oy in 0..oh {
                for ox in 0..ow {
                    let yi = ((b * d.co + o) * oh + oy) * ow + ox;
                    for cl in 0..cig {
                        let c = group * cig + cl;
                        for ky in 0..d.kh {
                            for kx in 0..d.kw {
                                let iy = (oy * d.stride + ky * d.dil) as isize - d.pad as isize;
                                let ix = (ox * d.stride + kx * d.dil) as isize - d.pad as isize;
                                if iy < 0 || ix < 0 || iy >= d.h as isize || ix >= d.w as isize {
                                    continue;
                                }
                                let xi = ((b * d.ci + c) * d.h + iy as usize) * d.w + ix as usize;
                                let wi = ((o * cig + cl) * d.kh + ky) * d.kw + kx;
                                let (xv, wv, rv) =
                                    (f64::from(x[xi]), f64::from(w[wi]), f64::from(r[yi]));
                                out.y[yi] += xv * wv;
                                out.y_abs[yi] += (xv * wv).abs();
                                out.gx[xi] += rv * wv;
                                out.gx_abs[xi] += (rv * wv).abs();
                                out.gw[wi] += rv * xv;
                                out.gw_abs[wi] += (rv * xv).abs();
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// The relative bound: an error within `REL · Σ|terms|`.
pub const REL: f64 = 1e-5;

/// `got` within `REL · abs` of `want`, element by element.
pub fn assert_close(what: &str, case: &impl Debug, got: &[f32], want: &[f64], abs: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what} {case:?}");
    for (i, ((g, w), a)) in got.iter().zip(want).zip(abs).enumerate() {
        let err = (f64::from(*g) - w).abs();
        assert!(
            err <= REL * a + 1e-30,
            "{what} {case:?} [{i}]: got {g}, want {w} (Σ|terms| {a}, error {err:e})"
        );
    }
}

/// [`assert_close`] to an f32 `want`.
pub fn assert_close_f32(what: &str, case: &impl Debug, got: &[f32], want: &[f32], abs: &[f64]) {
    let want: Vec<f64> = want.iter().map(|v| f64::from(*v)).collect();
    assert_close(what, case, got, &want, abs);
}

/// A convolution under test.
pub type Conv<'a> = dyn Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor> + 'a;

/// Gradients of `Σ y·r` for the input `x` (of `x_shape`) and the weight `w` (of `w_shape`),
/// with `conv` computing `y`; an empty vector for one that gets no gradient.
pub fn grads(
    (x, x_shape): (&[f32], [usize; 4]),
    (w, w_shape): (&[f32], [usize; 4]),
    r: &[f32],
    conv: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
    let xv = Var::from_tensor(&tensor(x, x_shape))?;
    let wv = Var::from_tensor(&tensor(w, w_shape))?;
    let y = conv(xv.as_tensor(), wv.as_tensor())?;
    let rt = Tensor::from_vec(r.to_vec(), y.dims(), &Device::Cpu)?;
    let g = (y * rt)?.sum_all()?.backward()?;
    let gx = g.get(xv.as_tensor()).map(f32s).unwrap_or_default();
    let gw = g.get(wv.as_tensor()).map(f32s).unwrap_or_default();
    Ok((gx, gw))
}

/// Milliseconds per call of `f`: the best of `runs` after a warm-up.
pub fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..runs)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

/// One QAT step of a conv layer with an int8 weight and a bias, and the same step through
/// candle.
pub struct QatStep {
    /// The layer's output.
    pub y: Tensor,
    /// The upstream gradient (`loss = Σ y·r`).
    pub r: Tensor,
    /// The gradients of the layer's weight and bias.
    pub gw: Vec<f32>,
    pub gb: Vec<f32>,
    /// The layer's fake-quantized weight.
    pub wq: Vec<f32>,
    /// Candle's output (`conv(x, wq) + bias`) and the gradient of `wq` there.
    pub candle_y: Tensor,
    pub candle_gw: Vec<f32>,
}

/// Runs `op` (built over `vm`, its parameters `{name}.weight` and `{name}.bias`) on `x` in
/// `Mode::Quantize` with the plain STE, then `conv` (candle's convolution) on the layer's
/// fake-quantized weight plus its bias. The plain STE passes the whole gradient (the default
/// clipped one drops it where an element rounds past the grid's end, which the absmax element
/// of a random init may). Asserts that the layer's weight and bias get gradients.
pub fn qat_step(
    (op, table): &Built,
    vm: &candle_nn::VarMap,
    name: &str,
    x: &Tensor,
    conv: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
) -> QatStep {
    table.set_mode(lowbit_nn::Mode::Quantize);
    op.quant()
        .weight
        .as_ref()
        .unwrap()
        .set_ste(lowbit_nn::Ste::Plain);
    let y = op.forward1(x).unwrap();
    let r = Tensor::from_vec(Rng(5).vec(y.elem_count(), 1.0), y.dims(), &Device::Cpu).unwrap();
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let vars = vm.data().lock().unwrap().clone();
    let (wvar, bvar) = (
        &vars[&format!("{name}.weight")],
        &vars[&format!("{name}.bias")],
    );
    let gw = f32s(grads.get(wvar.as_tensor()).unwrap());
    let gb = f32s(grads.get(bvar.as_tensor()).unwrap());
    assert!(gw.iter().any(|v| *v != 0.0) && gb.iter().any(|v| *v != 0.0));

    // The same step with candle's conv2d on the layer's quantized weight.
    let wq = Var::from_tensor(&fq("int8", &wvar.as_tensor().detach())).unwrap();
    let b = bvar.as_tensor().detach();
    let candle_y = conv(x, wq.as_tensor())
        .unwrap()
        .broadcast_add(&b.reshape((1, b.elem_count(), 1, 1)).unwrap())
        .unwrap();
    let g2 = (&candle_y * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let candle_gw = f32s(g2.get(wq.as_tensor()).unwrap());
    QatStep {
        y,
        r,
        gw,
        gb,
        wq: f32s(wq.as_tensor()),
        candle_y,
        candle_gw,
    }
}

/// A conv layer named `name`, built by `build` over the fixed weight `w` and a bias of
/// `Rng(3)` values with its quantizers off, is candle_nn's `Conv2d` with `cfg` bit for bit;
/// and its backward gives `x` a gradient where `candle_conv`'s backward fails (the shapes are
/// chosen so that it does).
pub fn check_stays_candles_layer(
    name: &str,
    (x, w): (&Tensor, &Tensor),
    cfg: candle_nn::Conv2dConfig,
    build: impl FnOnce(VarBuilder<'static>) -> Built,
    candle_conv: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
) {
    let co = w.dim(0).unwrap();
    let bias = Tensor::from_vec(Rng(3).vec(co, 0.1), co, &Device::Cpu).unwrap();
    let mut t = std::collections::HashMap::new();
    t.insert(format!("{name}.weight"), w.clone());
    t.insert(format!("{name}.bias"), bias.clone());
    let vb = VarBuilder::from_tensors(t, candle_core::DType::F32, &Device::Cpu);
    let (op, table) = build(vb);
    table.set_mode(lowbit_nn::Mode::Fp32);
    let got = f32s(&op.forward1(x).unwrap());
    let want = f32s(
        &candle_core::Module::forward(&candle_nn::Conv2d::new(w.clone(), Some(bias), cfg), x)
            .unwrap(),
    );
    assert_eq!(bits(&got), bits(&want));

    let xv = Var::from_tensor(x).unwrap();
    let y = op.forward1(xv.as_tensor()).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(xv.as_tensor()).unwrap().dims(), x.dims());
    let wv = Var::from_tensor(w).unwrap();
    let y = candle_conv(x, wv.as_tensor()).unwrap();
    assert!(y.sum_all().unwrap().backward().is_err());
}
