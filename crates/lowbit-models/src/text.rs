//! The text evaluation sets of gensim's test data (`scripts/fetch-assets.sh gensim`,
//! [`assets::group`]`("gensim")`):
//!
//! - [`WordSim353`] (`wordsim353.tsv`): 353 word pairs with a human relatedness score (0–10);
//! - [`SimLex999`] (`simlex999.txt`): 999 word pairs with a human similarity score (0–10);
//! - [`LeeCorpus`] (`lee.cor`, `similarities0-1.txt`): 50 news documents (one a line,
//!   ISO-8859-1) and the 50×50 matrix of their human pairwise similarity (0–1). Only its
//!   upper triangle is filled; gensim, and [`LeeCorpus::pairs`], use the pairs `i < j`.
//!
//! Both word-pair files are `word1 TAB word2 TAB score` lines after `#` comment lines. A line
//! that does not parse is a [`ModelError::Parse`] naming the file and the line.

use std::path::{Path, PathBuf};

use crate::assets;
use crate::error::{ModelError, Result};

/// The asset group of the evaluation sets.
pub const ASSET_GROUP: &str = "gensim";

/// The files the loaders read from the group directory.
pub const FILES: [&str; 4] = [
    WordSim353::FILE,
    SimLex999::FILE,
    LeeCorpus::DOCUMENTS,
    LeeCorpus::SIMILARITIES,
];

/// Two words and their human score.
#[derive(Clone, Debug, PartialEq)]
pub struct WordPair {
    /// First word.
    pub a: String,
    /// Second word.
    pub b: String,
    /// Human score (mean of the raters).
    pub score: f64,
}

/// WordSim-353: word relatedness.
#[derive(Clone, Debug, PartialEq)]
pub struct WordSim353 {
    /// The pairs in file order.
    pub pairs: Vec<WordPair>,
}

impl WordSim353 {
    /// File name in the group directory.
    pub const FILE: &str = "wordsim353.tsv";

    /// Reads the pairs from `path`.
    pub fn load(path: &Path) -> Result<WordSim353> {
        Ok(WordSim353 {
            pairs: read_word_pairs(path)?,
        })
    }

    /// Reads the fetched file.
    pub fn load_default() -> Result<WordSim353> {
        WordSim353::load(&assets::group(ASSET_GROUP).join(WordSim353::FILE))
    }
}

/// SimLex-999: word similarity (not relatedness: `coast`–`shore` high, `cup`–`coffee` low).
#[derive(Clone, Debug, PartialEq)]
pub struct SimLex999 {
    /// The pairs in file order.
    pub pairs: Vec<WordPair>,
}

impl SimLex999 {
    /// File name in the group directory.
    pub const FILE: &str = "simlex999.txt";

    /// Reads the pairs from `path`.
    pub fn load(path: &Path) -> Result<SimLex999> {
        Ok(SimLex999 {
            pairs: read_word_pairs(path)?,
        })
    }

    /// Reads the fetched file.
    pub fn load_default() -> Result<SimLex999> {
        SimLex999::load(&assets::group(ASSET_GROUP).join(SimLex999::FILE))
    }
}

/// The Lee corpus: documents and their human similarity matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct LeeCorpus {
    /// The documents, one per non-empty line of `lee.cor`.
    pub documents: Vec<String>,
    /// `similarities[i][j]`: human similarity of documents `i` and `j` (filled for `i ≤ j`).
    pub similarities: Vec<Vec<f64>>,
}

impl LeeCorpus {
    /// The documents' file.
    pub const DOCUMENTS: &str = "lee.cor";
    /// The similarity matrix's file.
    pub const SIMILARITIES: &str = "similarities0-1.txt";

    /// Reads `lee.cor` and `similarities0-1.txt` from `dir`; the matrix must be square with
    /// one row per document.
    pub fn load(dir: &Path) -> Result<LeeCorpus> {
        let doc_path = dir.join(LeeCorpus::DOCUMENTS);
        // ISO-8859-1: every byte is the code point of the same value.
        let documents: Vec<String> = read(&doc_path)?
            .split(|&b| b == b'\n')
            .map(|line| line.iter().map(|&b| char::from(b)).collect::<String>())
            .map(|s| s.trim_end_matches('\r').to_string())
            .filter(|s| !s.trim().is_empty())
            .collect();
        let sim_path = dir.join(LeeCorpus::SIMILARITIES);
        let text = read_utf8(&sim_path)?;
        let n = documents.len();
        let mut similarities = Vec::with_capacity(n);
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let row = line
                .split_whitespace()
                .map(|v| parse_score(v, &sim_path, i + 1))
                .collect::<Result<Vec<f64>>>()?;
            if row.len() != n {
                return Err(parse_err(
                    &sim_path,
                    i + 1,
                    format!("{} values, expected {n} (one per document)", row.len()),
                ));
            }
            similarities.push(row);
        }
        if similarities.len() != n {
            return Err(ModelError::Parse {
                path: sim_path,
                line: None,
                message: format!(
                    "{} rows, expected {n} (one per document of {})",
                    similarities.len(),
                    LeeCorpus::DOCUMENTS
                ),
            });
        }
        Ok(LeeCorpus {
            documents,
            similarities,
        })
    }

    /// Reads the fetched files.
    pub fn load_default() -> Result<LeeCorpus> {
        LeeCorpus::load(&assets::group(ASSET_GROUP))
    }

    /// The pairs `(i, j, human similarity)` with `i < j` (the upper triangle without the
    /// diagonal: 1225 pairs for 50 documents), row by row.
    pub fn pairs(&self) -> Vec<(usize, usize, f64)> {
        let n = self.documents.len();
        let mut out = Vec::with_capacity(n * n.saturating_sub(1) / 2);
        for (i, row) in self.similarities.iter().enumerate() {
            for (j, &s) in row.iter().enumerate().skip(i + 1) {
                out.push((i, j, s));
            }
        }
        out
    }
}

fn setup() -> String {
    assets::setup_command(ASSET_GROUP)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| ModelError::io(path, e, &setup()))
}

fn read_utf8(path: &Path) -> Result<String> {
    String::from_utf8(read(path)?).map_err(|e| ModelError::Parse {
        path: path.to_path_buf(),
        line: None,
        message: format!("not UTF-8: {e}"),
    })
}

fn parse_err(path: &Path, line: usize, message: String) -> ModelError {
    ModelError::Parse {
        path: PathBuf::from(path),
        line: Some(line),
        message,
    }
}

fn parse_score(v: &str, path: &Path, line: usize) -> Result<f64> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(parse_err(
            path,
            line,
            format!("`{v}` is not a finite number"),
        )),
    }
}

/// `word1 TAB word2 TAB score` lines; `#` lines and blank lines are skipped.
fn read_word_pairs(path: &Path) -> Result<Vec<WordPair>> {
    let text = read_utf8(path)?;
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [a, b, s] = fields.as_slice() else {
            return Err(parse_err(
                path,
                i + 1,
                format!(
                    "{} tab-separated fields, expected 3 (word, word, score)",
                    fields.len()
                ),
            ));
        };
        if a.trim().is_empty() || b.trim().is_empty() {
            return Err(parse_err(path, i + 1, "an empty word".into()));
        }
        pairs.push(WordPair {
            a: a.trim().to_string(),
            b: b.trim().to_string(),
            score: parse_score(s.trim(), path, i + 1)?,
        });
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn word_pairs_parse_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pairs.tsv");
        std::fs::write(
            &p,
            "# comment\n# Word 1\tWord 2\tHuman\nlove\tsex\t6.77\r\n\ntiger\tcat\t7.35\n",
        )
        .unwrap();
        let w = WordSim353::load(&p).unwrap();
        assert_eq!(
            w.pairs,
            vec![
                WordPair {
                    a: "love".into(),
                    b: "sex".into(),
                    score: 6.77
                },
                WordPair {
                    a: "tiger".into(),
                    b: "cat".into(),
                    score: 7.35
                },
            ]
        );
        std::fs::write(&p, "# c\nold\tnew\t1.58\nsmart\tintelligent\n").unwrap();
        let e = SimLex999::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("pairs.tsv:3:") && e.contains("2 tab-separated fields"),
            "{e}"
        );
        std::fs::write(&p, "a\tb\tnan\n").unwrap();
        let e = SimLex999::load(&p).unwrap_err().to_string();
        assert!(e.contains("pairs.tsv:1:") && e.contains("`nan`"), "{e}");
        let e = WordSim353::load(&dir.path().join("absent.tsv"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("scripts/fetch-assets.sh gensim"), "{e}");
    }

    #[test]
    fn lee_reads_latin1_and_takes_the_upper_triangle() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LeeCorpus::DOCUMENTS),
            b"one \xa33\ntwo\nthree",
        )
        .unwrap();
        std::fs::write(
            dir.path().join(LeeCorpus::SIMILARITIES),
            "1\t0.5\t0.25\n0\t1\t0.75\n0\t0\t1\n",
        )
        .unwrap();
        let lee = LeeCorpus::load(dir.path()).unwrap();
        assert_eq!(lee.documents, vec!["one £3", "two", "three"]);
        assert_eq!(lee.pairs(), vec![(0, 1, 0.5), (0, 2, 0.25), (1, 2, 0.75)]);
        std::fs::write(
            dir.path().join(LeeCorpus::SIMILARITIES),
            "1\t0.5\t0.25\n0\t1\n0\t0\t1\n",
        )
        .unwrap();
        let e = LeeCorpus::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("similarities0-1.txt:2:") && e.contains("expected 3"),
            "{e}"
        );
    }
}
