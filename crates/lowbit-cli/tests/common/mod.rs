//! Helpers shared by the end-to-end tests of the `lowbit` binary: running it, and reading
//! what a run wrote.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `lowbit args`.
pub fn lowbit(args: &[&str]) -> Output {
    lowbit_env(args, &[] as &[(&str, &str)])
}

/// Runs `lowbit args` with the environment variables `env` set.
pub fn lowbit_env<V: AsRef<OsStr>>(args: &[&str], env: &[(&str, V)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lowbit"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run lowbit")
}

/// Runs `lowbit args` on two threads (`RAYON_NUM_THREADS=2`), so that runs are
/// bit-reproducible.
pub fn lowbit_two_threads(args: &[&str]) -> Output {
    lowbit_env(args, &[("RAYON_NUM_THREADS", "2")])
}

/// The output's stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The one run directory under `dir`.
pub fn only_subdir(dir: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(v.len(), 1, "{v:?}");
    v.remove(0)
}

/// A JSON file's document.
pub fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The summary rows by config name.
pub fn rows(summary: &serde_json::Value) -> HashMap<String, serde_json::Value> {
    summary["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["config"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}
