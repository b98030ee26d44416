//! Where fetched assets live: `scripts/fetch-assets.sh` puts the files that are not committed
//! (pretrained checkpoints, tokenizers, evaluation sets, photos) under one directory, by
//! default `assets/` at the repository root, or `$LOWBIT_ASSETS` when set. Code reads them from
//! there and never downloads; a missing file is [`ModelError::MissingFile`](crate::ModelError)
//! naming the setup command that provides it ([`setup_command`]).

use std::path::{Path, PathBuf};

/// The environment variable that overrides the assets directory.
pub const ENV: &str = "LOWBIT_ASSETS";

/// The assets directory: `$LOWBIT_ASSETS`, else `assets/` at the repository root.
pub fn dir() -> PathBuf {
    match std::env::var_os(ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets"),
    }
}

/// The directory of one asset group (`minilm`, `gensim`, `photos`, `efficientnet-lite0`,
/// `fashion-mnist`) under [`dir`].
pub fn group(name: &str) -> PathBuf {
    dir().join(name)
}

/// The command that fetches the asset group `name`.
pub fn setup_command(name: &str) -> String {
    format!("scripts/fetch-assets.sh {name}")
}

/// Whether every one of `files` exists in the group `name` (tests that need fetched assets use
/// this to skip, with a message, when they are absent).
pub fn present(name: &str, files: &[&str]) -> bool {
    let d = group(name);
    files.iter().all(|f| d.join(f).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_command_names_the_group() {
        assert_eq!(setup_command("minilm"), "scripts/fetch-assets.sh minilm");
        assert!(group("photos").ends_with("photos"));
    }
}
