//! Stochastic rounding during training: every training step draws fresh words (the seed of
//! the step, `QuantSpec::at_step`), the same step gives the same bits, and outside training the
//! seed is the one written in the spec.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{Device, Tensor};
use lowbit_formats::{Rounding, stochastic_step_seed};
use lowbit_nn::{ModelContext, Quantizer, Role};
use lowbit_quant::QuantSpec;

fn vals(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

/// What the spec itself gives for `x` (the independent path: lowbit-quant's slice API).
fn expected(spec: &QuantSpec, x: &[f32], shape: &[usize]) -> Vec<u32> {
    let mut out = vec![0f32; x.len()];
    spec.fake_quantize(x, shape, &mut out).unwrap();
    out.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn every_training_step_draws_fresh_stochastic_words() {
    let spec = "mxfp4"
        .parse::<QuantSpec>()
        .unwrap()
        .to_builder()
        .rounding(Rounding::Stochastic { seed: 42 })
        .build()
        .unwrap();
    let shape = [8usize, 64];
    let x: Vec<f32> = (0..512)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.0173)
        .collect();
    let t = Tensor::from_vec(x.clone(), &shape, &Device::Cpu).unwrap();
    let ctx = ModelContext::new();
    let q = Quantizer::new("fc", Role::Weight, spec, None, ctx.clone());

    // Outside training: the written seed, whatever steps were begun.
    let eval = vals(&q.apply(&t).unwrap());
    assert_eq!(eval, expected(&spec, &x, &shape));

    ctx.set_training(true);
    let mut seen = vec![eval.clone()];
    for step in 1..=3u64 {
        assert_eq!(ctx.begin_step(), step);
        assert_eq!(ctx.stochastic_step(), step);
        let got = vals(&q.apply(&t).unwrap());
        // The spec at this step, computed independently of the context.
        let stepped = spec
            .to_builder()
            .rounding(Rounding::Stochastic {
                seed: stochastic_step_seed(42, step),
            })
            .build()
            .unwrap();
        assert_eq!(got, expected(&stepped, &x, &shape), "step {step}");
        assert_eq!(got, vals(&q.apply(&t).unwrap()), "step {step} twice");
        assert!(
            !seen.contains(&got),
            "step {step} repeats an earlier step's rounding"
        );
        seen.push(got);
    }
    ctx.set_training(false);
    assert_eq!(ctx.stochastic_step(), 0);
    assert_eq!(vals(&q.apply(&t).unwrap()), eval);

    // Deterministic rounding ignores steps.
    let rne: QuantSpec = "mxfp4".parse().unwrap();
    assert_eq!(rne.at_step(5), rne);
}
