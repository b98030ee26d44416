#!/usr/bin/env python3
"""Golden NVFP4 data from torchao's reference quantizer.

Reference: torchao.prototype.mx_formats.nvfp4_tensor.nvfp4_quantize (torchao 0.12.0, on
torch 2.5.1 CPU), the two-level NVFP4 scheme: a per-tensor f32 scale
per_tensor_scale = amax / (448 * 6) (torch f32 division), blocks of 16 along the last axis,
block scales (block_amax / 6) / per_tensor_scale clamped to [2^-6, 448] and cast to
float8_e4m3fn, elements data / (per_tensor_scale * block_scale) clamped to [-6, 6] and cast
to E2M1 (f32_to_f4_unpacked). Dequantized values as NVFP4Tensor.to_dtype computes them:
e2m1_value * (per_tensor_scale * block_scale).

Also the one-level form (per_tensor_scale=None): block scales clamp(block_amax / 6, 2^-6,
448) cast to E4M3, elements data / block_scale.

Writes crates/lowbit-quant/tests/golden/nvfp4_torchao.txt:

    # comments
    case <name> <levels: 1|2> <rows> <cols> <per-tensor scale f32 bits, or - for one level>
    x <f32 bits of row 0, hex, space separated>       (rows lines)
    s <E4M3 block-scale bytes of row 0, hex>           (rows lines)
    c <E2M1 codes of row 0, one hex digit each>        (rows lines)
    d <f32 bits of the dequantized row 0, hex>         (rows lines)

Usage (from the repository root; a venv with torch 2.5.1 and torchao 0.12.0 installed with
--no-deps, plus numpy):

    python scripts/golden/gen_nvfp4_golden.py

Deterministic: numpy's PCG64 with fixed seeds.
"""

from pathlib import Path

import numpy as np
import torch
from golden_io import f32_rows, hex32, write
import torchao
from torchao.prototype.mx_formats.nvfp4_tensor import nvfp4_quantize
from torchao.prototype.mx_formats.kernels import f4_unpacked_to_f32, unpack_uint4

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT = REPO_ROOT / "crates" / "lowbit-quant" / "tests" / "golden" / "nvfp4_torchao.txt"
ROWS, COLS = 16, 64


def cases():
    rng = np.random.default_rng(20261130)
    f = np.float32
    yield "normal", rng.standard_normal((ROWS, COLS)).astype(f)
    yield "laplace", rng.laplace(size=(ROWS, COLS)).astype(f)
    yield "student_t2", rng.standard_t(2, size=(ROWS, COLS)).astype(f)
    # Magnitudes spread over 2^-40 .. 2^40: blocks whose scale clamps at 2^-6 relative to the
    # tensor scale, elements that flush to zero.
    mags = np.exp2(rng.uniform(-40, 40, size=(ROWS, COLS)))
    signs = rng.choice([-1.0, 1.0], size=(ROWS, COLS))
    yield "wide_range", (mags * signs).astype(f)
    # Per-row magnitude steps (rows of very different size under one tensor scale).
    steps = np.exp2(np.arange(ROWS) * 2.0 - 16.0)[:, None]
    yield "row_steps", (rng.standard_normal((ROWS, COLS)) * steps).astype(f)
    # Blocks of zeros, a single nonzero element, constant blocks, tiny values.
    x = rng.standard_normal((ROWS, COLS)).astype(f)
    x[0, :16] = 0
    x[1, 16:32] = 0
    x[1, 20] = 3.0
    x[2, :] = 1.0
    x[3, :] = -0.5
    x[4, 32:48] = 1e-30
    x[5, 48:64] = np.float32(2.0**-149)
    yield "zeros_and_constants", x
    # Elements on the E2M1 rounding ties (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5) and just
    # beside them (one f32 ulp either way), in units of each block's E4M3 scale bs.
    ties = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], dtype=np.float64)
    x = np.zeros((ROWS, COLS), dtype=np.float64)
    e4m3 = [1.0, 1.125, 1.25, 1.375, 1.5, 1.625, 1.75, 1.875]
    for r in range(ROWS):
        for b in range(COLS // 16):
            bs = e4m3[(r * 4 + b) % 8] * 2.0 ** ((r + b) % 5 - 2)
            # The block max is 6 * bs: the block scale comes out as bs exactly.
            blk = np.zeros(16)
            blk[0] = 6.0 * bs
            for i in range(1, 16):
                t = ties[(i + r + b) % len(ties)]
                nudge = [0.0, 1.0, -1.0][(i + b) % 3]
                v = np.float32(t * bs)
                if nudge != 0.0:
                    v = np.nextafter(v, np.float32(np.inf if nudge > 0 else -np.inf))
                blk[i] = v * (1 if (i + r) % 2 else -1)
            x[r, b * 16:(b + 1) * 16] = blk
    # One element 2688 = 448 * 6 makes the tensor scale exactly 1, so each block's scale is
    # its bs (one level: bs too, as block_amax / 6 = bs).
    x[ROWS - 1, COLS - 1] = 2688.0
    yield "ties", x.astype(f)


def e2m1_values(codes):
    return f4_unpacked_to_f32(codes)


def run(x, levels):
    t = torch.from_numpy(x.copy())
    if levels == 2:
        amax = torch.max(torch.abs(t))
        pts = amax.to(torch.float32) / (448.0 * 6.0)
        scales, packed = nvfp4_quantize(t, block_size=16, per_tensor_scale=pts)
    else:
        pts = None
        scales, packed = nvfp4_quantize(t, block_size=16, per_tensor_scale=None)
    codes = unpack_uint4(packed.contiguous().view(torch.uint8)).view(ROWS, COLS)
    vals = e2m1_values(codes).view(ROWS, COLS // 16, 16)
    hp = scales.to(torch.float32)
    if pts is not None:
        hp = pts * hp
    deq = (vals * hp.view(ROWS, COLS // 16, 1)).view(ROWS, COLS)
    return pts, scales.view(torch.uint8).view(ROWS, COLS // 16), codes, deq


def main():
    assert torchao.__version__.startswith("0.12.0"), torchao.__version__
    assert torch.__version__.startswith("2.5.1"), torch.__version__
    lines = [
        "# NVFP4 golden data from torchao 0.12.0 nvfp4_quantize (torch 2.5.1 CPU).",
        "# Generated by scripts/golden/gen_nvfp4_golden.py; format described there.",
    ]
    for name, x in cases():
        for levels in (2, 1):
            pts, s, c, d = run(x, levels)
            pts_bits = (
                "-"
                if pts is None
                else hex32(np.array([pts.item()], np.float32))
            )
            lines.append(f"case {name} {levels} {ROWS} {COLS} {pts_bits}")
            f32_rows(lines, "x", x)
            for r in range(ROWS):
                lines.append("s " + " ".join(f"{int(v):02x}" for v in s[r]))
            for r in range(ROWS):
                lines.append("c " + "".join(f"{int(v):x}" for v in c[r]))
            f32_rows(lines, "d", d.numpy())
    write(OUT, lines)


if __name__ == "__main__":
    main()
