#!/usr/bin/env bash
# Fetches Fashion-MNIST (training and test split, IDX gz) into assets/fashion-mnist/ from the
# pinned Debian package dataset-fashion-mnist and checks the sha256 of every file.
# Idempotent: files already present with the right sha256 are kept. The test split is also
# committed in crates/lowbit-models/data/fashion-mnist/; the training split is not.
#
#   scripts/fetch-fashion-mnist.sh            # into assets/fashion-mnist
#   scripts/fetch-fashion-mnist.sh DIR        # into DIR
#
# Needs apt-get (Debian/Ubuntu with the Debian archive in its sources) and dpkg-deb; no root
# (`apt-get download` writes to the current directory). Run `apt-get update` first when the
# package is not found.
set -euo pipefail

PKG=dataset-fashion-mnist
VERSION='0.0~git20200523.55506a9-1'
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$ROOT/assets/fashion-mnist}"

declare -A SHA256=(
  [train-images-idx3-ubyte.gz]=b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7
  [train-labels-idx1-ubyte.gz]=0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056
  [t10k-images-idx3-ubyte.gz]=cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa
  [t10k-labels-idx1-ubyte.gz]=8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05
)

ok() { [[ -f "$DEST/$1" ]] && [[ "$(sha256sum "$DEST/$1" | cut -d' ' -f1)" == "${SHA256[$1]}" ]]; }

missing=0
for f in "${!SHA256[@]}"; do ok "$f" || missing=1; done
if [[ $missing == 0 ]]; then
  echo "fashion-mnist: all files present and checked in $DEST"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(
  cd "$tmp"
  if ! apt-get download "$PKG=$VERSION" >/dev/null 2>"$tmp/apt.err"; then
    cat "$tmp/apt.err" >&2
    echo "apt-get download $PKG=$VERSION failed; run 'apt-get update' (as root) and retry" >&2
    exit 1
  fi
  dpkg-deb -x ./*.deb x
)
mkdir -p "$DEST"
for f in "${!SHA256[@]}"; do
  src="$tmp/x/usr/share/datasets/fashion-mnist/$f"
  got="$(sha256sum "$src" | cut -d' ' -f1)"
  if [[ "$got" != "${SHA256[$f]}" ]]; then
    echo "fashion-mnist: $f has sha256 $got, expected ${SHA256[$f]}" >&2
    exit 1
  fi
  cp "$src" "$DEST/$f"
done
echo "fashion-mnist: fetched $PKG $VERSION into $DEST"
