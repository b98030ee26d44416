#!/usr/bin/env python3
"""Golden OCP MX data from torchao's reference quantizer.

Reference: torchao.prototype.mx_formats.mx_tensor.to_mx and to_dtype (torchao 0.12.0, on
torch 2.5.1 CPU), blocks of 32 along the last axis, for MXFP8 E4M3/E5M2 and MXFP6 E2M3/E3M2
(MXFP4 needs torch 2.8 in torchao), with the scale rules FLOOR (OCP MX v1.0 section 6.3),
CEIL, EVEN and RCEIL (NVIDIA's cuBLAS rule). Block maxima are kept in the normal f32 range: there torchao's bit-level exponent
extraction is floor(log2(amax)) (for a subnormal maximum it reads exponent -127, and it clamps
scales below at 2^-126, where the spec's floor(log2) and 2^-127 apply; lowbit follows the
spec, tests/quant.rs covers those blocks by hand).

Writes crates/lowbit-quant/tests/golden/mx_torchao.txt:

    # comments
    input <name> <rows> <cols>
    x <f32 bits of row 0, hex>                   (rows lines)
    case <format> <rule: floor|ceil|even|rceil> <input name>
    s <E8M0 scale bytes of row 0, hex>           (rows lines)
    c <element codes of row 0, two hex digits>   (rows lines)
    d <f32 bits of the dequantized row 0, hex>   (rows lines)

Usage (from the repository root; a venv with torch 2.5.1 and torchao 0.12.0 installed with
--no-deps, plus numpy):

    python scripts/golden/gen_mx_golden.py

Deterministic: numpy's PCG64 with fixed seeds.
"""

from pathlib import Path

import numpy as np
import torch
from golden_io import f32_rows, hex32, write

# torch 2.5.1 has no float8_e8m0fnu dtype (2.7 does); to_mx only uses it to view its uint8
# scale bytes as that dtype at the end, so a uint8 stand-in leaves every computation as is.
if not hasattr(torch, "float8_e8m0fnu"):
    torch.float8_e8m0fnu = torch.uint8

import torchao  # noqa: E402
from torchao.prototype.mx_formats.constants import DTYPE_FP6_E2M3, DTYPE_FP6_E3M2  # noqa: E402
from torchao.prototype.mx_formats.mx_tensor import (  # noqa: E402
    ScaleCalculationMode,
    to_dtype,
    to_mx,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT = REPO_ROOT / "crates" / "lowbit-quant" / "tests" / "golden" / "mx_torchao.txt"
ROWS, COLS, BLOCK = 4, 128, 32

FORMATS = [
    ("mxfp8_e4m3", torch.float8_e4m3fn),
    ("mxfp8_e5m2", torch.float8_e5m2),
    ("mxfp6_e2m3", DTYPE_FP6_E2M3),
    ("mxfp6_e3m2", DTYPE_FP6_E3M2),
    # MXFP4 needs torch.float4_e2m1fn_x2 (torch 2.8); its scale rule is the others' with
    # emax 2, and its element rounding is checked against torchao by nvfp4_torchao.txt.
]


def cases():
    rng = np.random.default_rng(20261201)
    f = np.float32
    yield "normal", rng.standard_normal((ROWS, COLS)).astype(f)
    yield "laplace", rng.laplace(size=(ROWS, COLS)).astype(f)
    yield "student_t2", rng.standard_t(2, size=(ROWS, COLS)).astype(f)
    steps = np.exp2(np.arange(ROWS) * 19.0 - 30.0)[:, None]
    yield "row_steps", (rng.standard_normal((ROWS, COLS)) * steps).astype(f)
    # Magnitudes over 2^-60 .. 2^60 (block maxima stay normal): elements that flush to zero
    # or to subnormals of the element format.
    mags = np.exp2(rng.uniform(-60, 60, size=(ROWS, COLS)))
    signs = rng.choice([-1.0, 1.0], size=(ROWS, COLS))
    yield "wide_range", (mags * signs).astype(f)
    # Zero blocks, constants, the OCP example (957 in an MXFP8 E4M3 block), maxima just
    # below and at powers of two, elements on rounding ties of the element grids.
    x = rng.standard_normal((ROWS, COLS)).astype(f)
    x[0, :32] = 0
    x[0, 32:64] = 1.0
    x[0, 64:96] = -3.0
    x[1, :32] = rng.standard_normal(32).astype(f)
    x[1, 0] = 957.0
    x[1, 32:64] = rng.uniform(-1, 1, 32).astype(f)
    x[1, 32] = np.nextafter(f(2.0), f(0))
    x[1, 64:96] = rng.uniform(-1, 1, 32).astype(f)
    x[1, 64] = 2.0
    grid = np.array([0.0625, 0.1875, 0.3125, 0.4375, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0,
                     6.5, 7.5, 13.0, 15.0, 26.0, 30.0], dtype=np.float64)
    for r in range(2, ROWS):
        for b in range(COLS // 32):
            scale = 2.0 ** ((r * 4 + b) % 9 - 4)
            blk = np.zeros(32)
            for i in range(32):
                t = grid[(i + r + b) % len(grid)]
                blk[i] = t * scale * (1 if (i + b) % 2 else -1)
            x[r, b * 32:(b + 1) * 32] = blk
    yield "edges_and_ties", x.astype(f)


def run(x, dtype, rule):
    t = torch.from_numpy(x.copy())
    mode = getattr(ScaleCalculationMode, rule.upper())
    scale, data = to_mx(t, dtype, BLOCK, scaling_mode=mode)
    deq = to_dtype(data, scale, dtype, BLOCK, torch.float32, False, False)
    if dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        codes = data.view(torch.uint8)
    else:
        codes = data
    return (
        scale.view(torch.uint8).reshape(ROWS, COLS // BLOCK),
        codes.reshape(ROWS, COLS),
        deq.reshape(ROWS, COLS),
    )


def main():
    assert torchao.__version__.startswith("0.12.0"), torchao.__version__
    assert torch.__version__.startswith("2.5.1"), torch.__version__
    lines = [
        "# OCP MX golden data from torchao 0.12.0 to_mx / to_dtype (torch 2.5.1 CPU).",
        "# Generated by scripts/golden/gen_mx_golden.py; format described there.",
    ]
    for name, x in cases():
        lines.append(f"input {name} {ROWS} {COLS}")
        f32_rows(lines, "x", x)
        for fmt, dtype in FORMATS:
            for rule in ("floor", "ceil", "even", "rceil"):
                s, c, d = run(x, dtype, rule)
                lines.append(f"case {fmt} {rule} {name}")
                for r in range(ROWS):
                    lines.append("s " + " ".join(f"{int(v):02x}" for v in s[r]))
                for r in range(ROWS):
                    lines.append("c " + "".join(f"{int(v):02x}" for v in c[r]))
                f32_rows(lines, "d", d.numpy())
    write(OUT, lines)


if __name__ == "__main__":
    main()
