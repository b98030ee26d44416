#!/usr/bin/env python3
"""Golden reference for lowbit-models' EfficientNet-Lite0 and its image preprocessing.

Writes crates/lowbit-models/tests/data/efficientnet_photos.json, read by
crates/lowbit-models/tests/efficientnet.rs (the Rust tests never run Python).

Reference implementations (independent of the Rust code and of each other):

* preprocessing: PIL + torchvision transforms, as an ImageNet evaluation does:
  `Image.open(f).convert("RGB")`, `Resize(256)` (bilinear; PIL's resampling, which is
  antialiased when downscaling), `CenterCrop(224)`; then (x - 127) / 128 on the 0..255
  values (EfficientNet-Lite's normalisation, `MEAN_RGB = STDDEV_RGB - 1 = 127` in the TF
  lite builder).
* model: timm's `tf_efficientnet_lite0` architecture (TF "SAME" padding, BN eps 1e-3,
  ReLU6, no squeeze-excite, stem 32 / head 1280 fixed) with the checkpoint's lukemelas-style
  names mapped onto timm's, and a second, hand-written forward pass in plain torch
  (F.pad + F.conv2d) over the checkpoint's own names; the two must agree.
* padding check: the same timm model built with symmetric PyTorch padding
  (`pad_type=""`), whose top-1 classes are recorded to show which padding the weights were
  trained with (the checkpoint comes from ml-illustrated/EfficientNet-Lite-PyTorch, a fork of
  lukemelas' efficientnet_pytorch whose `Conv2dStaticSamePadding` pads TF-style:
  total = max((ceil(in/s) - 1)·s + k - in, 0), left = total // 2, right = total - left).
  Checked once by hand against that original code (PyPI efficientnet_lite_pytorch 0.1.0,
  `EfficientNet.from_name("efficientnet-lite0")`, strict load of this checkpoint): its logits
  equal the timm model's exactly (max |diff| 0.0 on all six photos), while the symmetric
  padding moves them by 1.4 to 3.0.

Fixture contents, per photo (assets/photos, scripts/fetch-assets.sh photos):
  size            original (width, height)
  resized         (width, height) after Resize(256)
  crop_box        (left, top) of the 224×224 crop in the resized image
  crop_u8         checksums of the cropped uint8 RGB image in HWC order (index
                  i = (y·224 + x)·3 + c): sum, weighted = Σ v·(i mod 251 + 1), and
                  samples = values at i_k = (k·587) mod (224·224·3) for k in 0..256
  input           of the normalised CHW float32 tensor: sum (float64) and the first 8 values
  top5            indices and logits (float32) of the timm model's five largest logits,
                  top1_prob: softmax probability of the first
  top1_symmetric  top-1 index with symmetric padding (the wrong padding, for the record) and
                  symmetric_max_abs_logit_diff, how far its logits are from the reference
plus `synthetic`: the full 1000 logits for the deterministic input
  x[c, h, w] = ((c·50176 + h·224 + w)·7919 mod 256 − 127) / 128,
which checks the network alone (no image decoding involved).

Usage (from the repository root):

    /work/refenv/bin/python scripts/golden/efficientnet_reference.py

Versions used: torch 2.5.1, torchvision 0.20.1, timm 1.0.31, pillow 13.0.0,
safetensors 0.8.0 (CPython 3.11). Deterministic on CPU.
"""

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import PIL
import timm
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from safetensors.torch import load_file
from torchvision import transforms as T

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "assets"
CKPT = ASSETS / "efficientnet-lite0" / "efficientnet_lite0.safetensors"
PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "astronaut.png", "horse.png"]
OUT = REPO / "crates" / "lowbit-models" / "tests" / "data" / "efficientnet_photos.json"

# Lite0 = B0's block arguments: (expand, kernel, stride, out channels, repeats)
STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
N_SAMPLES = 256
CROP_LEN = 224 * 224 * 3


def timm_state_dict(sd):
    """Maps the checkpoint's lukemelas names onto timm's tf_efficientnet_lite0 names."""
    out = {}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
           "_fc": "classifier"}
    # flat block index -> (stage, index in stage)
    where = []
    for s, (_, _, _, _, r) in enumerate(STAGES):
        where += [(s, j) for j in range(r)]
    ds = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    ir = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
          "_project_conv": "conv_pwl", "_bn2": "bn3"}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            s, j = where[n]
            m = (ds if n == 0 else ir)[parts[2]]
            out[".".join(["blocks", str(s), str(j), m] + parts[3:])] = v
        else:
            out[".".join([top[parts[0]]] + parts[1:])] = v
    return out


def build_timm(sd, pad_type):
    kw = {} if pad_type is None else {"pad_type": pad_type}
    m = timm.create_model("tf_efficientnet_lite0", pretrained=False, **kw)
    missing, unexpected = m.load_state_dict(timm_state_dict(sd), strict=True), None
    m.eval()
    return m


def same_pad(x, k, s):
    """TF 'SAME' zero padding (asymmetric: the extra row/column goes right/bottom)."""
    ih, iw = x.shape[-2:]
    ph = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
    pw = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


def plain_forward(sd, x):
    """EfficientNet-Lite0 written out over the checkpoint's own names (second reference)."""
    def bn(x, p):
        return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                            sd[p + ".bias"], False, 0.0, 1e-3)

    def conv(x, p, s=1, groups=1):
        w = sd[p + ".weight"]
        return F.conv2d(same_pad(x, w.shape[-1], s), w, None, s, 0, 1, groups)

    x = F.relu6(bn(conv(x, "_conv_stem", 2), "_bn0"))
    n, c = 0, 32
    for (e, k, s, o, r) in STAGES:
        for j in range(r):
            st = s if j == 0 else 1
            p = f"_blocks.{n}"
            h = x
            if e != 1:
                h = F.relu6(bn(conv(h, p + "._expand_conv"), p + "._bn0"))
            h = F.relu6(bn(conv(h, p + "._depthwise_conv", st, groups=h.shape[1]), p + "._bn1"))
            h = bn(conv(h, p + "._project_conv"), p + "._bn2")
            x = h + x if (st == 1 and c == o) else h
            n, c = n + 1, o
    x = F.relu6(bn(conv(x, "_conv_head"), "_bn1"))
    x = x.mean(dim=(2, 3))
    return F.linear(x, sd["_fc.weight"], sd["_fc.bias"])


def f32(v):
    """The shortest decimal that reads back as the same float32 (keeps the fixture small)."""
    return float(np.format_float_positional(np.float32(v), unique=True, trim="-"))


def compact(obj):
    """JSON with one key per line but every list of numbers on a single line."""
    text = json.dumps(obj, indent=1)
    return re.sub(r"\[\s*([-0-9.e,\s]+?)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def crop_box(w, h, size):
    # torchvision.transforms.functional.center_crop: int(round((h - size) / 2.0))
    return int(round((w - size) / 2.0)), int(round((h - size) / 2.0))


def main():
    torch.set_grad_enabled(False)
    sd = {k: v for k, v in load_file(str(CKPT)).items() if not k.endswith("num_batches_tracked")}
    model = build_timm(sd, None)
    model_sym = build_timm(sd, "")
    resize = T.Resize(256, interpolation=T.InterpolationMode.BILINEAR)
    crop = T.CenterCrop(224)

    photos = []
    for name in PHOTOS:
        img = Image.open(ASSETS / "photos" / name).convert("RGB")
        r = resize(img)
        c = crop(r)
        u8 = np.asarray(c, dtype=np.uint8)  # HWC
        assert u8.shape == (224, 224, 3)
        flat = u8.reshape(-1).astype(np.int64)
        idx = np.arange(flat.size)
        chw = torch.from_numpy(u8.copy()).permute(2, 0, 1).float()
        x = ((chw - 127.0) / 128.0).unsqueeze(0)
        logits = model(x)[0]
        plain = plain_forward(sd, x)[0]
        diff = (logits - plain).abs().max().item()
        assert diff < 1e-3, f"{name}: timm and the plain forward differ by {diff}"
        top = torch.topk(logits, 5)
        prob = torch.softmax(logits, 0)[top.indices[0]].item()
        sym_logits = model_sym(x)[0]
        sym = sym_logits.argmax().item()
        photos.append({
            "file": name,
            "size": list(img.size),
            "resized": list(r.size),
            "crop_box": list(crop_box(r.size[0], r.size[1], 224)),
            "crop_u8": {
                "sum": int(flat.sum()),
                "weighted": int((flat * (idx % 251 + 1)).sum()),
                "samples": [int(flat[(k * 587) % CROP_LEN]) for k in range(N_SAMPLES)],
            },
            "input": {
                "sum": float(x.double().sum().item()),
                "first": [f32(v) for v in x.reshape(-1)[:8].tolist()],
            },
            "top5": {"indices": top.indices.tolist(), "logits": [f32(v) for v in top.values.tolist()]},
            "top1_prob": f32(prob),
            "top1_symmetric": sym,
            "symmetric_max_abs_logit_diff": f32((sym_logits - logits).abs().max().item()),
            "timm_vs_plain_max_abs": f32(diff),
        })
        cats = torchvision.models._meta._IMAGENET_CATEGORIES
        print(f"{name:22} top1 {top.indices[0].item():4} {cats[top.indices[0].item()]:20} "
              f"p={prob:.3f}  symmetric-padding top1 {sym} {cats[sym]}  |timm-plain| {diff:.2e}",
              file=sys.stderr)

    i = torch.arange(3 * 224 * 224, dtype=torch.int64)
    xs = (((i * 7919) % 256).float() - 127.0) / 128.0
    xs = xs.reshape(1, 3, 224, 224)
    syn = model(xs)[0]
    assert (syn - plain_forward(sd, xs)[0]).abs().max().item() < 1e-3

    out = {
        "generator": "scripts/golden/efficientnet_reference.py",
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                     "timm": timm.__version__, "pillow": PIL.__version__},
        "checkpoint": "assets/efficientnet-lite0/efficientnet_lite0.safetensors",
        "preprocess": "PIL convert RGB; torchvision Resize(256, bilinear); CenterCrop(224); (x - 127) / 128",
        "photos": photos,
        "synthetic": {
            "input": "x[c,h,w] = ((c*50176 + h*224 + w) * 7919 mod 256 - 127) / 128",
            "logits": [f32(v) for v in syn.tolist()],
        },
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w") as f:
        f.write(compact(out) + "\n")
    print(f"wrote {OUT.relative_to(REPO)} ({OUT.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
