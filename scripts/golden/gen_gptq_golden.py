#!/usr/bin/env python3
"""Golden GPTQ data from the reference algorithm.

Reference: `GPTQ.fasterquant` of IST-DASLab's gptq.py (Frantar et al., 2023), ported line by
line to torch in float64 (the original runs float32 on a GPU): dead inputs, `percdamp`
dampening, `cholesky` → `cholesky_inverse` → upper `cholesky`, lazy batches of `blocksize`
columns, group scales found at each group's first column from the weight as it stands at
the start of the current batch, `actorder` (columns in decreasing order of H_ii; the
sort made stable) and `static_groups` (every group's scale found up front from the weight
with dead inputs zeroed, before any column is quantized; in act order a column keeps its
original group's scale). The quantizer is lowbit's symmetric int4 (narrow range ±7):
`scale = amax / 7` (f32), `q = clamp(rint(x · f32(1 / scale)), −7, 7) · scale` in f32.

Writes crates/lowbit-quant/tests/golden/gptq_reference.txt:

    # comments
    shape <rows> <cols> <samples>
    w <f32 bits of the weight, row-major>
    x <f32 bits of the calibration inputs, row-major>
    case <name> <groupsize: -1 for per channel> <blocksize> <actorder: 0|1> <static_groups: 0|1>
    q <f32 bits of the quantized weight, row-major>

Usage (the environment of scripts/golden/README.md):

    python scripts/golden/gen_gptq_golden.py
"""

import math
from pathlib import Path

import numpy as np
import torch
from golden_io import hex32, write

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT = REPO_ROOT / "crates" / "lowbit-quant" / "tests" / "golden" / "gptq_reference.txt"
ROWS, COLS, SAMPLES = 16, 128, 200


def quant_params(w):
    """Per-row symmetric int4 scale of `w` (rows x k), f32 as lowbit computes it."""
    amax = np.abs(w.astype(np.float32)).max(axis=1)
    scale = (amax / np.float32(7.0)).astype(np.float32)
    scale[scale == 0] = np.float32(1.0)
    return scale


def quantize(x, scale):
    """lowbit's element quantizer: clamp(rint(x * f32(1/s)), -7, 7) * s, in f32."""
    x = x.astype(np.float32)
    inv = (np.float32(1.0) / scale).astype(np.float32)
    q = np.clip(np.rint((x * inv).astype(np.float32)), -7, 7).astype(np.float32)
    return (q * scale).astype(np.float32)


def fasterquant(
    W, H, blocksize=128, percdamp=0.01, groupsize=-1, actorder=False, static_groups=False
):
    W = W.clone().double()
    H = H.clone().double()
    columns = W.shape[1]
    scale = None
    if groupsize == -1:
        scale = quant_params(W.numpy())
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    if static_groups:
        groups = [
            quant_params(W[:, i : (i + groupsize)].numpy()) for i in range(0, columns, groupsize)
        ]
    if actorder:
        # The reference's torch.argsort(descending=True), made stable for ties.
        perm = torch.from_numpy(np.argsort(-torch.diag(H).numpy(), kind="stable"))
        W = W[:, perm]
        H = H[perm][:, perm]
    Q = torch.zeros_like(W)
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    H = torch.linalg.cholesky(H, upper=True)
    Hinv = H
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if groupsize != -1:
                if not static_groups:
                    if (i1 + i) % groupsize == 0:
                        scale = quant_params(W[:, (i1 + i):(i1 + i + groupsize)].numpy())
                else:
                    idx = i1 + i
                    if actorder:
                        idx = int(perm[idx])
                    scale = groups[idx // groupsize]
            q = torch.from_numpy(quantize(w.numpy(), scale)).double()
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    if actorder:
        invperm = torch.argsort(perm)
        Q = Q[:, invperm]
    return Q.float()


def main():
    assert torch.__version__.startswith("2.5.1"), torch.__version__
    rng = np.random.default_rng(20261203)
    w = (rng.standard_normal((ROWS, COLS)) * 0.2).astype(np.float32)
    m = rng.standard_normal((COLS, COLS)).astype(np.float32) / math.sqrt(COLS)
    z = rng.standard_normal((SAMPLES, COLS)).astype(np.float32)
    x = (z @ m).astype(np.float32)
    x[:, 7] *= 10.0  # an outlier input channel
    x[:, 11] = 0.0  # a dead input
    H = torch.from_numpy(x.astype(np.float64)).T @ torch.from_numpy(x.astype(np.float64))
    lines = [
        "# GPTQ golden data: IST-DASLab fasterquant ported to float64 torch 2.5.1, lowbit's int4.",
        "# Generated by scripts/golden/gen_gptq_golden.py; format described there.",
        f"shape {ROWS} {COLS} {SAMPLES}",
        "w " + hex32(w),
        "x " + hex32(x),
    ]
    for name, groupsize, blocksize, actorder, static in [
        ("per_channel", -1, 128, False, False),
        ("groups_32", 32, 128, False, False),
        ("groups_64_block_32", 64, 32, False, False),
        ("per_channel_act_order", -1, 128, True, False),
        ("groups_32_block_32_static", 32, 32, False, True),
        ("groups_32_static_act_order", 32, 128, True, True),
        ("groups_64_block_32_static_act_order", 64, 32, True, True),
    ]:
        q = fasterquant(
            torch.from_numpy(w),
            H,
            blocksize=blocksize,
            groupsize=groupsize,
            actorder=actorder,
            static_groups=static,
        )
        lines.append(f"case {name} {groupsize} {blocksize} {int(actorder)} {int(static)}")
        lines.append("q " + hex32(q.numpy().astype(np.float32)))
    write(OUT, lines)


if __name__ == "__main__":
    main()
