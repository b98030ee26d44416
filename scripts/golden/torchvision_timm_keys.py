#!/usr/bin/env python3
"""Golden fixtures for lowbit-models' ResNet (torchvision names) and ViT (timm names).

Reference implementations: torchvision's `resnet18`/`resnet50`/`ResNet` and timm's
`VisionTransformer`. Versions this was run with (checked below; a mismatch is an error):

    torch       == 2.5.1
    torchvision == 0.20.1
    timm        == 1.0.31
    numpy       == 2.4.6

Setup (the project's reference environment):

    /work/refenv/bin/pip install --no-deps torchvision==0.20.1 timm==1.0.31

Run from the repository root:

    /work/refenv/bin/python scripts/golden/torchvision_timm_keys.py

It writes, into crates/lowbit-models/tests/data/:

  torchvision_resnet18_keys.json        {name: shape} of torchvision.models.resnet18().state_dict()
  torchvision_resnet50_keys.json        the same for resnet50()
  timm_vit_base_patch16_224_keys.json   the same for timm.create_model('vit_base_patch16_224')
      (every key of the state dict, num_batches_tracked included: the Rust loader ignores
      them and so does the test, with the same predicate)

  resnet_forward_golden.json            logits of two small synthetic torchvision ResNets
  vit_forward_golden.json               logits of a small synthetic timm VisionTransformer

The synthetic checkpoints are not stored: every parameter is a formula of its position that
the Rust test reproduces bit for bit (see `fill` below), so the test rebuilds the same
tensors, writes a safetensors file, loads it through the model's loader and compares the
logits with the ones here. Per tensor the fixture also holds the f64 sum of its f32 values
(math.fsum, exact), so the Rust test can check its reproduction before any forward pass.

Deterministic: sin comes from Python's math module (the C library's sin, the same one Rust's
f64::sin calls on Linux), float64 arithmetic in the order written below, then a cast to
float32 (round to nearest even).
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import timm
import torch
import torchvision
from timm.models.vision_transformer import VisionTransformer
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

EXPECTED = {
    "torch": "2.5.1",
    "torchvision": "0.20.1",
    "timm": "1.0.31",
    "numpy": "2.4.6",
}
SCRIPT = "scripts/golden/torchvision_timm_keys.py"
OUT = Path(__file__).resolve().parents[2] / "crates" / "lowbit-models" / "tests" / "data"


def check_versions():
    got = {
        "torch": torch.__version__.split("+")[0],
        "torchvision": torchvision.__version__.split("+")[0],
        "timm": timm.__version__,
        "numpy": np.__version__,
    }
    bad = {k: (got[k], v) for k, v in EXPECTED.items() if got[k] != v}
    if bad:
        sys.exit(f"version mismatch (got, expected): {bad}")
    return got


def keys(model):
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def fill(name, k, shape):
    """The value of every element of tensor `name` (index `k` in sorted key order).

    s(i) = sin(0.37 * i + 0.11 * k), i the flat (row-major) element index, then by role:
      running_var                        1 + 0.1 * |s|
      running_mean, bias                 0.1 * s
      weight of rank >= 2 (conv, linear) s * (2 / sqrt(fan_in)),  fan_in = prod(shape[1:])
      weight of rank 1 (BN, LayerNorm)   1 + 0.1 * s
      anything else (cls_token, pos_embed) 0.5 * s
    all in float64, then cast to float32.
    """
    n = int(np.prod(shape)) if shape else 1
    s = [math.sin(0.37 * i + 0.11 * k) for i in range(n)]
    if name.endswith("running_var"):
        v = [1.0 + 0.1 * abs(x) for x in s]
    elif name.endswith("running_mean") or name.endswith("bias"):
        v = [0.1 * x for x in s]
    elif name.endswith("weight") and len(shape) >= 2:
        a = 2.0 / math.sqrt(float(np.prod(shape[1:])))
        v = [x * a for x in s]
    elif name.endswith("weight"):
        v = [1.0 + 0.1 * x for x in s]
    else:
        v = [0.5 * x for x in s]
    return np.array(v, dtype=np.float64).astype(np.float32).reshape(shape)


def input_tensor(shape):
    """x_j = sin(0.013 * j + 0.5) for the flat index j, float64 then float32."""
    n = int(np.prod(shape))
    v = [math.sin(0.013 * j + 0.5) for j in range(n)]
    return np.array(v, dtype=np.float64).astype(np.float32).reshape(shape)


def fill_model(model):
    """Fills every float tensor of the state dict (num_batches_tracked skipped); returns
    {name: fsum of its float32 values}."""
    sd = model.state_dict()
    names = sorted(n for n, t in sd.items() if t.is_floating_point())
    sums = {}
    with torch.no_grad():
        for k, name in enumerate(names):
            v = fill(name, k, list(sd[name].shape))
            sd[name].copy_(torch.from_numpy(v))
            sums[name] = math.fsum(float(x) for x in v.reshape(-1))
    return names, sums


def run(model, x):
    """Logits in float32 (eval mode) and, for the error budget, in float64."""
    model.eval()
    with torch.no_grad():
        y32 = model(torch.from_numpy(x)).numpy()
        m64 = model.double()
        y64 = m64(torch.from_numpy(x).double()).numpy()
        model.float()
    return y32, y64


def case(name, model, config, input_shape):
    names, sums = fill_model(model)
    x = input_tensor(input_shape)
    y32, y64 = run(model, x)
    diff = float(np.max(np.abs(y32.astype(np.float64) - y64)))
    print(f"{name}: logits range [{y64.min():.4f}, {y64.max():.4f}], "
          f"torch f32 vs f64 max |diff| {diff:.3e}")
    return {
        "config": config,
        "input_shape": list(input_shape),
        "tensors": len(names),
        "sums": sums,
        "logits_f32": [float(v) for v in y32.reshape(-1)],
        "logits_f64": [float(v) for v in y64.reshape(-1)],
        "torch_f32_vs_f64_max_abs": diff,
    }


def write(name, obj):
    path = OUT / name
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def main():
    versions = check_versions()
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    header = {"generator": SCRIPT, "versions": versions}

    write("torchvision_resnet18_keys.json",
          {**header, "model": "torchvision.models.resnet18()",
           "keys": keys(torchvision.models.resnet18())})
    write("torchvision_resnet50_keys.json",
          {**header, "model": "torchvision.models.resnet50()",
           "keys": keys(torchvision.models.resnet50())})
    write("timm_vit_base_patch16_224_keys.json",
          {**header, "model": "timm.create_model('vit_base_patch16_224', pretrained=False)",
           "keys": keys(timm.create_model("vit_base_patch16_224", pretrained=False))})

    resnet = {
        **header,
        "fill": fill.__doc__,
        "input": input_tensor.__doc__,
        "resnet18_c10": case(
            "resnet18_c10", torchvision.models.resnet18(num_classes=10),
            {"block": "basic", "layers": [2, 2, 2, 2], "num_classes": 10},
            (2, 3, 64, 64)),
        "bottleneck_1111_c10": case(
            "bottleneck_1111_c10", ResNet(Bottleneck, [1, 1, 1, 1], num_classes=10),
            {"block": "bottleneck", "layers": [1, 1, 1, 1], "num_classes": 10},
            (2, 3, 64, 64)),
    }
    write("resnet_forward_golden.json", resnet)

    vit_cfg = {"image_size": 32, "patch_size": 8, "dim": 48, "depth": 2, "heads": 3,
               "mlp_dim": 192, "num_classes": 10}
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3,
                            mlp_ratio=4.0, num_classes=10)
    assert vit.blocks[0].mlp.fc1.out_features == vit_cfg["mlp_dim"]
    write("vit_forward_golden.json", {
        **header,
        "fill": fill.__doc__,
        "input": input_tensor.__doc__,
        "vit_tiny_c10": case("vit_tiny_c10", vit, vit_cfg, (2, 3, 32, 32)),
    })
    # The BasicBlock import documents which block resnet18 uses.
    assert isinstance(torchvision.models.resnet18().layer1[0], BasicBlock)


if __name__ == "__main__":
    main()
