//! Evaluation of a sentence-embedding model ([`SentenceEncoder`]) on gensim's text sets, and
//! the agreement of its quantized embeddings with FP32 ones.
//!
//! Protocol ([`embedding_scores`]):
//!
//! - WordSim-353 and SimLex-999: every word is embedded as a one-word text; the score is
//!   Spearman's ρ between the cosine of the two words of each pair and the human score;
//! - Lee: the 50 documents are embedded; the score is Pearson's r between the cosine of every
//!   pair `i < j` and the human similarity (the upper triangle without the diagonal, 1225
//!   pairs, as gensim uses the matrix).
//!
//! The items embedded ([`EmbeddingTasks::texts`]) are the distinct words of both word sets,
//! sorted, then the Lee documents; [`embedding_eval`] returns their embeddings, so that an
//! FP32 pass can be kept as the reference of quantized passes ([`compare_embeddings`]: mean
//! and least cosine between the two embeddings of each item).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Tensor};
use lowbit_models::{LeeCorpus, SentenceEncoder, SimLex999, WordPair, WordSim353};
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::metrics::{pearson, spearman};

/// The evaluation sets, loaded.
#[derive(Clone, Debug)]
pub struct EmbeddingTasks {
    /// WordSim-353.
    pub wordsim353: WordSim353,
    /// SimLex-999.
    pub simlex999: SimLex999,
    /// The Lee corpus.
    pub lee: LeeCorpus,
    words: Vec<String>,
}

impl EmbeddingTasks {
    /// The tasks of three loaded sets.
    pub fn new(wordsim353: WordSim353, simlex999: SimLex999, lee: LeeCorpus) -> EmbeddingTasks {
        let words: BTreeSet<&str> = wordsim353
            .pairs
            .iter()
            .chain(&simlex999.pairs)
            .flat_map(|p| [p.a.as_str(), p.b.as_str()])
            .collect();
        let words = words.into_iter().map(str::to_string).collect();
        EmbeddingTasks {
            wordsim353,
            simlex999,
            lee,
            words,
        }
    }

    /// Loads the sets from the directory `dir` (file names as in `lowbit_models::text`).
    pub fn load(dir: &Path) -> Result<EmbeddingTasks> {
        Ok(EmbeddingTasks::new(
            WordSim353::load(&dir.join(WordSim353::FILE))?,
            SimLex999::load(&dir.join(SimLex999::FILE))?,
            LeeCorpus::load(dir)?,
        ))
    }

    /// Loads the fetched sets (`scripts/fetch-assets.sh gensim`).
    pub fn load_default() -> Result<EmbeddingTasks> {
        EmbeddingTasks::load(&lowbit_models::assets::group(
            lowbit_models::text::ASSET_GROUP,
        ))
    }

    /// The distinct words of both word sets, sorted.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The texts to embed, in the order of the rows of the embeddings: [`words`] then the
    /// Lee documents.
    ///
    /// [`words`]: EmbeddingTasks::words
    pub fn texts(&self) -> Vec<&str> {
        self.words
            .iter()
            .chain(&self.lee.documents)
            .map(String::as_str)
            .collect()
    }

    /// Number of texts.
    pub fn len(&self) -> usize {
        self.words.len() + self.lee.documents.len()
    }

    /// Whether there is nothing to embed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Scores of one set of embeddings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingStats {
    /// Spearman's ρ on WordSim-353.
    pub wordsim353_spearman: f64,
    /// Pairs of WordSim-353.
    pub wordsim353_pairs: usize,
    /// Spearman's ρ on SimLex-999.
    pub simlex999_spearman: f64,
    /// Pairs of SimLex-999.
    pub simlex999_pairs: usize,
    /// Pearson's r on the Lee corpus.
    pub lee_pearson: f64,
    /// Document pairs of the Lee corpus.
    pub lee_pairs: usize,
    /// Texts embedded.
    pub items: usize,
}

/// How close embeddings are to reference (FP32) embeddings of the same texts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingAgreement {
    /// Texts compared.
    pub items: usize,
    /// Mean over texts of the cosine between the two embeddings.
    pub cosine_mean: f64,
    /// Least cosine.
    pub cosine_min: f64,
    /// Row of the least cosine (an index into [`EmbeddingTasks::texts`]).
    pub worst: usize,
}

/// What [`embedding_eval`] measured.
#[derive(Clone, Debug)]
pub struct EmbeddingEval {
    /// Scores.
    pub stats: EmbeddingStats,
    /// Agreement with the reference, when one was given.
    pub agreement: Option<EmbeddingAgreement>,
    /// The embeddings `[tasks.len(), dim]`, rows in [`EmbeddingTasks::texts`] order (keep an
    /// FP32 pass's as the reference of quantized passes).
    pub embeddings: Tensor,
    /// Wall time of the encoding.
    pub seconds: f64,
}

/// Embeds every text of `tasks` with `encoder` (in its current mode), scores them
/// ([`embedding_scores`]) and, given `reference` embeddings of the same texts, compares with
/// them ([`compare_embeddings`]).
///
/// ```no_run
/// use candle_core::Device;
/// use lowbit_eval::{EmbeddingTasks, embedding_eval};
/// use lowbit_models::SentenceEncoder;
/// use lowbit_nn::{Mode, QuantConfig};
///
/// let config = QuantConfig::from_yaml("defaults: { weight: int8 }", "inline")?;
/// let encoder = SentenceEncoder::load_default(&config, &Device::Cpu)?;
/// let tasks = EmbeddingTasks::load_default()?;
/// encoder.layers().set_mode(Mode::Fp32);
/// let fp32 = embedding_eval(&encoder, &tasks, None)?;
/// encoder.layers().set_mode(Mode::Quantize);
/// let int8 = embedding_eval(&encoder, &tasks, Some(&fp32.embeddings))?;
/// println!("{:?} {:?}", int8.stats, int8.agreement);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn embedding_eval(
    encoder: &SentenceEncoder,
    tasks: &EmbeddingTasks,
    reference: Option<&Tensor>,
) -> Result<EmbeddingEval> {
    let start = Instant::now();
    let embeddings = encoder.encode(&tasks.texts())?;
    let seconds = start.elapsed().as_secs_f64();
    let stats = embedding_scores(tasks, &embeddings)?;
    let agreement = reference
        .map(|r| compare_embeddings(r, &embeddings))
        .transpose()?;
    Ok(EmbeddingEval {
        stats,
        agreement,
        embeddings,
        seconds,
    })
}

/// The rows of a `[n, d]` tensor as f64 vectors, checking `n`.
fn rows(t: &Tensor, n: usize, what: &str) -> Result<Vec<Vec<f64>>> {
    let dims = t.dims();
    if dims.len() != 2 || dims[0] != n {
        return Err(EvalError::mismatch(
            what,
            format!("embeddings of shape {dims:?}, expected [{n}, dim]"),
        ));
    }
    let v = t.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    Ok(v)
}

/// Cosine of two vectors (NaN when one is zero).
fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa * bb).sqrt()
}

/// The scores of `embeddings` (rows in [`EmbeddingTasks::texts`] order) on the three sets
/// (see the module docs for the protocol).
pub fn embedding_scores(tasks: &EmbeddingTasks, embeddings: &Tensor) -> Result<EmbeddingStats> {
    let e = rows(embeddings, tasks.len(), "embedding_scores")?;
    let index: HashMap<&str, usize> = tasks
        .words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.as_str(), i))
        .collect();
    let word_score = |name: &str, pairs: &[WordPair]| -> Result<f64> {
        let mut cos = Vec::with_capacity(pairs.len());
        for p in pairs {
            let (Some(&i), Some(&j)) = (index.get(p.a.as_str()), index.get(p.b.as_str())) else {
                return Err(EvalError::mismatch(
                    name,
                    format!("pair `{}`–`{}` is not among the tasks' words", p.a, p.b),
                ));
            };
            cos.push(cosine(&e[i], &e[j]));
        }
        let human: Vec<f64> = pairs.iter().map(|p| p.score).collect();
        spearman(&cos, &human)
    };
    let ws = word_score("wordsim353", &tasks.wordsim353.pairs)?;
    let sl = word_score("simlex999", &tasks.simlex999.pairs)?;
    let offset = tasks.words.len();
    let lee_pairs = tasks.lee.pairs();
    let (cos, human): (Vec<f64>, Vec<f64>) = lee_pairs
        .iter()
        .map(|&(i, j, s)| (cosine(&e[offset + i], &e[offset + j]), s))
        .unzip();
    let lee = pearson(&cos, &human)?;
    Ok(EmbeddingStats {
        wordsim353_spearman: ws,
        wordsim353_pairs: tasks.wordsim353.pairs.len(),
        simlex999_spearman: sl,
        simlex999_pairs: tasks.simlex999.pairs.len(),
        lee_pearson: lee,
        lee_pairs: lee_pairs.len(),
        items: tasks.len(),
    })
}

/// Cosine between each row of `embeddings` and the same row of `reference` (both `[n, d]`):
/// mean, least, and where the least is. A zero row gives a NaN cosine, which becomes the
/// least and makes the mean NaN.
pub fn compare_embeddings(reference: &Tensor, embeddings: &Tensor) -> Result<EmbeddingAgreement> {
    let n = reference.dims().first().copied().unwrap_or(0);
    if reference.dims() != embeddings.dims() {
        return Err(EvalError::mismatch(
            "compare_embeddings",
            format!(
                "reference of shape {:?}, embeddings of shape {:?}",
                reference.dims(),
                embeddings.dims()
            ),
        ));
    }
    let r = rows(reference, n, "compare_embeddings")?;
    let e = rows(embeddings, n, "compare_embeddings")?;
    let (mut sum, mut min, mut worst) = (0.0, f64::INFINITY, 0);
    for (i, (a, b)) in r.iter().zip(&e).enumerate() {
        let c = cosine(a, b);
        sum += c;
        if c < min || c.is_nan() && !min.is_nan() {
            min = c;
            worst = i;
        }
    }
    Ok(EmbeddingAgreement {
        items: n,
        cosine_mean: if n == 0 { f64::NAN } else { sum / n as f64 },
        cosine_min: if n == 0 { f64::NAN } else { min },
        worst,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use candle_core::Device;
    use lowbit_nn::{Mode, QuantConfig};

    fn pair(a: &str, b: &str, score: f64) -> WordPair {
        WordPair {
            a: a.into(),
            b: b.into(),
            score,
        }
    }

    #[test]
    fn compare_embeddings_exact() {
        let dev = Device::Cpu;
        let r = Tensor::new(&[[1.0f32, 0.0], [0.0, 1.0], [3.0, 4.0]], &dev).unwrap();
        let q = Tensor::new(&[[2.0f32, 0.0], [1.0, 1.0], [3.0, 4.0]], &dev).unwrap();
        let a = compare_embeddings(&r, &q).unwrap();
        let s = 0.5f64.sqrt();
        assert_eq!(a.items, 3);
        assert_eq!(a.worst, 1);
        assert!((a.cosine_min - s).abs() < 1e-15);
        assert!((a.cosine_mean - (2.0 + s) / 3.0).abs() < 1e-15);
        let bad = Tensor::zeros((2, 2), DType::F32, &dev).unwrap();
        assert!(compare_embeddings(&r, &bad).is_err());
    }

    #[test]
    fn scores_follow_the_protocol() {
        // Words (sorted): a, b, c, d; embeddings chosen so the cosines are known.
        let tasks = EmbeddingTasks::new(
            WordSim353 {
                pairs: vec![
                    pair("a", "b", 1.0),
                    pair("a", "c", 2.0),
                    pair("a", "d", 3.0),
                ],
            },
            SimLex999 {
                pairs: vec![pair("b", "c", 5.0), pair("c", "d", 1.0)],
            },
            LeeCorpus {
                documents: vec!["x".into(), "y".into(), "z".into()],
                similarities: vec![
                    vec![1.0, 0.5, 0.2],
                    vec![0.0, 1.0, 0.1],
                    vec![0.0, 0.0, 1.0],
                ],
            },
        );
        assert_eq!(tasks.words(), ["a", "b", "c", "d"]);
        assert_eq!(tasks.texts(), ["a", "b", "c", "d", "x", "y", "z"]);
        let e = Tensor::new(
            &[
                [1.0f32, 0.0], // a
                [-1.0, 0.0],   // b: cos(a, b) = −1
                [0.0, 1.0],    // c: cos(a, c) = 0
                [1.0, 1.0],    // d: cos(a, d) = 0.71; cos(b, c) = 0, cos(c, d) = 0.71
                [1.0, 0.0],    // x
                [1.0, 1.0],    // y: cos(x, y) = 0.71
                [0.0, 1.0],    // z: cos(x, z) = 0, cos(y, z) = 0.71
            ],
            &Device::Cpu,
        )
        .unwrap();
        let s = embedding_scores(&tasks, &e).unwrap();
        assert_eq!(s.wordsim353_spearman, 1.0);
        assert_eq!(s.simlex999_spearman, -1.0);
        // Lee pairs (x,y), (x,z), (y,z): cosines (h, 0, h), human (0.5, 0.2, 0.1).
        let h = 0.5f64.sqrt();
        let expect = pearson(&[h, 0.0, h], &[0.5, 0.2, 0.1]).unwrap();
        // (cos(x, y) in f64 from f32 inputs may differ from √½ by an ulp.)
        assert!(
            (s.lee_pearson - expect).abs() < 1e-12,
            "{} {expect}",
            s.lee_pearson
        );
        assert_eq!(
            (s.wordsim353_pairs, s.simlex999_pairs, s.lee_pairs, s.items),
            (3, 2, 3, 7)
        );
        assert!(embedding_scores(&tasks, &e.narrow(0, 0, 6).unwrap()).is_err());
    }

    /// The reference fixture of `crates/lowbit-models/tests/data/minilm_reference.json`.
    fn reference() -> serde_json::Value {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../lowbit-models/tests/data/minilm_reference.json"
        );
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    /// FP32 scores of all-MiniLM-L6-v2 against the Python reference, then int8 weights
    /// against FP32. Needs the fetched assets.
    #[test]
    fn minilm_scores_match_reference_and_int8_stays_close() {
        use lowbit_models::{assets, minilm, text};
        if !assets::present(minilm::ASSET_GROUP, &minilm::FILES)
            || !assets::present(text::ASSET_GROUP, &text::FILES)
        {
            eprintln!(
                "skipped: run `scripts/fetch-assets.sh minilm` and `scripts/fetch-assets.sh gensim`"
            );
            return;
        }
        let config = QuantConfig::from_yaml("defaults: { weight: int8 }", "inline").unwrap();
        let encoder = SentenceEncoder::load_default(&config, &Device::Cpu).unwrap();
        let tasks = EmbeddingTasks::load_default().unwrap();
        encoder.layers().set_mode(Mode::Fp32);
        let fp32 = embedding_eval(&encoder, &tasks, None).unwrap();
        let s = fp32.stats;
        eprintln!(
            "fp32: {s:?}; {} texts in {:.2} s",
            tasks.len(),
            fp32.seconds
        );
        let r = reference();
        let want = |k: &str| r[k].as_f64().unwrap();
        assert_eq!(s.wordsim353_pairs, 353);
        assert_eq!(s.simlex999_pairs, 999);
        assert_eq!(s.lee_pairs, 1225);
        assert!(
            (s.wordsim353_spearman - want("wordsim353_spearman")).abs() < 0.005,
            "{s:?}"
        );
        assert!(
            (s.simlex999_spearman - want("simlex999_spearman")).abs() < 0.005,
            "{s:?}"
        );
        assert!((s.lee_pearson - want("lee_pearson")).abs() < 0.005, "{s:?}");

        encoder.layers().set_mode(Mode::Quantize);
        let int8 = embedding_eval(&encoder, &tasks, Some(&fp32.embeddings)).unwrap();
        let a = int8.agreement.unwrap();
        let texts = tasks.texts();
        eprintln!(
            "int8 weights: {:?}; {a:?} (worst: {:?}); {:.2} s",
            int8.stats, texts[a.worst], int8.seconds
        );
        assert_eq!(a.items, tasks.len());
        assert!(a.cosine_min > 0.99 && a.cosine_mean > 0.995, "{a:?}");
        assert!((int8.stats.wordsim353_spearman - s.wordsim353_spearman).abs() < 0.02);
        assert!((int8.stats.simlex999_spearman - s.simlex999_spearman).abs() < 0.02);
        assert!((int8.stats.lee_pearson - s.lee_pearson).abs() < 0.02);
    }
}
