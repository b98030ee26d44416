//! `lowbit run --model minilm`: the sentence-embedding model all-MiniLM-L6-v2 under FP32 and
//! each config, scored on gensim's sets (WordSim-353 and SimLex-999 Spearman, Lee Pearson; the
//! protocol of [`lowbit_eval::embedding`]) and compared with the FP32 embeddings (cosine mean
//! and least), plus the per-layer comparison, compliance and compression of every run.
//!
//! Every text of the sets is embedded once per config (the FP32 pass once, shared); the
//! per-layer statistics run on the first `--layer-samples` texts as one padded batch.

use std::path::Path;

use lowbit_eval::embedding::{EmbeddingTasks, embedding_eval};
use lowbit_eval::{EmbeddingReport, Evaluator, RunMeta, RunReport, TaskMetrics, Variant};
use lowbit_models::{LeeCorpus, SentenceEncoder, SimLex999, WordSim353};
use lowbit_nn::QuantConfig;

use crate::EvalOpts;
use crate::error::{CliError, Result};
use crate::models::{self, model_err};
use crate::run::NamedConfig;

/// The `--model` name.
pub const MODEL: &str = "minilm";

/// What [`evaluate`] returns: one report per config (the FP32 scores in each one's
/// `embedding.fp32`) and a description of the data.
pub struct EmbeddingRun {
    /// One report per config (its `embedding` part filled).
    pub reports: Vec<RunReport>,
    /// The data, in words.
    pub description: String,
}

/// The first `n` pairs of each word set and the first `n` Lee documents (with their block of
/// the similarity matrix).
fn limit_tasks(tasks: EmbeddingTasks, n: Option<usize>) -> EmbeddingTasks {
    let Some(n) = n else { return tasks };
    let lee = LeeCorpus {
        documents: tasks.lee.documents.iter().take(n).cloned().collect(),
        similarities: tasks
            .lee
            .similarities
            .iter()
            .take(n)
            .map(|row| row.iter().take(n).copied().collect())
            .collect(),
    };
    EmbeddingTasks::new(
        WordSim353 {
            pairs: tasks.wordsim353.pairs.into_iter().take(n).collect(),
        },
        SimLex999 {
            pairs: tasks.simlex999.pairs.into_iter().take(n).collect(),
        },
        lee,
    )
}

/// Evaluates `configs` on all-MiniLM-L6-v2 (`data`: a directory with gensim's files instead of
/// the fetched one).
pub fn evaluate(
    configs: &[NamedConfig],
    data: Option<&Path>,
    opts: &EvalOpts,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<EmbeddingRun> {
    if opts.sensitivity {
        return Err(CliError::Usage(
            "--sensitivity ranks layers by top-1 and is for classifiers; minilm has no top-1 (its per-layer SQNR is in the reports)".into(),
        ));
    }
    let dev = models::device(&opts.device)?;
    let tasks = match data {
        Some(d) => EmbeddingTasks::load(d)?,
        None => EmbeddingTasks::load_default()?,
    };
    let tasks = limit_tasks(tasks, opts.limit);
    let texts = tasks.texts();
    let items = texts.len() as u64;
    let batch_size = opts
        .batch_size
        .unwrap_or(lowbit_models::minilm::DEFAULT_BATCH_SIZE);
    let load = |config: &QuantConfig| -> Result<SentenceEncoder> {
        let mut e = SentenceEncoder::load_default(config, &dev).map_err(model_err)?;
        e.set_batch_size(batch_size)
            .map_err(|_| CliError::Usage("--batch-size must be at least 1".into()))?;
        Ok(e)
    };
    let fp32_encoder = load(&QuantConfig::default())?;
    let fp32 = embedding_eval(&fp32_encoder, &tasks, None)?;
    progress(1);
    let mut variants = Vec::new();
    let mut scores = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let encoder = load(&c.config)?;
        c.load_scales(lowbit_nn::QuantModel::layers(&encoder))?;
        let e = embedding_eval(&encoder, &tasks, Some(&fp32.embeddings))?;
        let agreement = e.agreement.ok_or_else(|| {
            CliError::Other(format!("{}: no comparison with FP32 embeddings", c.name))
        })?;
        scores.push(EmbeddingReport {
            fp32: fp32.stats,
            quantized: e.stats,
            agreement,
        });
        variants.push(Variant {
            name: c.name.clone(),
            model: Box::new(encoder),
            detail: true,
        });
        progress(i as u64 + 2);
    }
    // Per-layer statistics, compliance, compression: one batch of the first texts.
    let n = match opts.layer_samples {
        0 => texts.len(),
        l => l.min(texts.len()),
    };
    let ids = if n > 0 {
        let tokens = fp32_encoder.tokenize(&texts[..n]).map_err(model_err)?;
        Some(fp32_encoder.pad_ids(&tokens).map_err(model_err)?.0)
    } else {
        None
    };
    let mut ev = Evaluator::new(Box::new(fp32_encoder), variants);
    if let Some(ids) = ids {
        // The evaluator's top-1 needs labels; an embedding has none, and the classification
        // fields of the reports are cleared below.
        ev.add_batch(&ids, &vec![0; n])?;
    }
    let results = ev.finish();
    let meta = RunMeta {
        model: MODEL.to_string(),
        data: format!("gensim WordSim-353, SimLex-999, Lee ({items} texts)"),
        batch_size,
        seed: opts.seed,
    };
    let none = TaskMetrics {
        samples: items,
        ..TaskMetrics::default()
    };
    let reports = results
        .variants
        .iter()
        .zip(scores)
        .map(|(v, s)| {
            let mut r = RunReport::new(&meta, none, v, &[]);
            r.fp32 = none;
            r.quantized = none;
            r.delta_top1 = 0.0;
            r.embedding = Some(s);
            r
        })
        .collect();
    Ok(EmbeddingRun {
        reports,
        description: meta.data,
    })
}

/// `lowbit calibrate --model minilm`: static scales (and smoothing factors) from the last `n`
/// texts of the sets (Lee documents, then words from the end: `run --limit` evaluates the
/// first ones), embedded in batches of `batch_size`. Returns the scales and the text count.
pub fn calibrate(
    config: &QuantConfig,
    data: Option<&Path>,
    n: usize,
    batch_size: usize,
    method: lowbit_quant::Method,
) -> Result<(lowbit_nn::StaticScales, usize)> {
    let tasks = match data {
        Some(d) => EmbeddingTasks::load(d)?,
        None => EmbeddingTasks::load_default()?,
    };
    let texts = tasks.texts();
    let texts = &texts[texts.len().saturating_sub(n)..];
    let mut encoder =
        SentenceEncoder::load_default(config, &candle_core::Device::Cpu).map_err(model_err)?;
    encoder
        .set_batch_size(batch_size)
        .map_err(|_| CliError::Usage("--batch-size must be at least 1".into()))?;
    let pass = || -> Result<()> {
        encoder.encode(texts).map_err(model_err)?;
        Ok(())
    };
    let scales = crate::run::calibrate_layers(encoder.layers(), &pass, method)?;
    Ok((scales, texts.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lowbit_models::WordPair;

    #[test]
    fn limit_keeps_the_first_pairs_and_documents() {
        let pair = |a: &str, b: &str| WordPair {
            a: a.into(),
            b: b.into(),
            score: 1.0,
        };
        let tasks = EmbeddingTasks::new(
            WordSim353 {
                pairs: vec![pair("a", "b"), pair("c", "d")],
            },
            SimLex999 {
                pairs: vec![pair("e", "f"), pair("g", "h")],
            },
            LeeCorpus {
                documents: vec!["x".into(), "y".into(), "z".into()],
                similarities: vec![vec![1.0, 0.5, 0.2], vec![0.0, 1.0, 0.3], vec![0.0; 3]],
            },
        );
        let t = limit_tasks(tasks, Some(1));
        assert_eq!(t.words(), ["a", "b", "e", "f"]);
        assert_eq!(t.lee.documents, ["x"]);
        assert_eq!(t.lee.similarities, [[1.0]]);
    }
}
