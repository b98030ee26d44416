#!/usr/bin/env python3
"""Golden fixture for `lowbit qat`'s optimizers (crates/lowbit-cli/src/qat/optim.rs).

Reference: PyTorch's torch.optim.AdamW and torch.optim.SGD (momentum 0.9, no dampening, no
Nesterov, no weight decay), float32, CPU, foreach=False. Version checked below:

    torch == 2.5.1

Run from the repository root with the project's reference environment:

    /work/refenv/bin/python scripts/golden/qat_optimizers.py

It writes crates/lowbit-cli/tests/data/qat_optimizers.json: per case the hyper-parameters,
the initial 6 parameters, and per step the learning rate, the vector c of the loss
`sum(c * p) + 0.5 * sum(p * p)` (gradient c + p) and the parameters after the step.
"""
import json
import math
import pathlib

import torch

assert torch.__version__.split("+")[0] == "2.5.1", torch.__version__

OUT = pathlib.Path("crates/lowbit-cli/tests/data/qat_optimizers.json")
INIT = [0.5, -1.25, 2.0, 0.125, -0.03125, 3.0]
STEPS = 5


def c_of(step):
    # Exactly representable in float32 (multiples of 1/64).
    return [((7 * step + 3 * i) % 11 - 5) / 64.0 for i in range(6)]


def lr_of(step, peak):
    return peak * 0.5 * (1.0 + math.cos(math.pi * step / STEPS))


def run(name, make, peak, extra):
    p = torch.tensor(INIT, dtype=torch.float32, requires_grad=True)
    opt = make([p])
    steps = []
    for k in range(STEPS):
        lr = lr_of(k, peak)
        for g in opt.param_groups:
            g["lr"] = lr
        c = torch.tensor(c_of(k), dtype=torch.float32)
        opt.zero_grad()
        loss = (c * p).sum() + 0.5 * (p * p).sum()
        loss.backward()
        opt.step()
        steps.append(
            {"lr": lr, "c": c_of(k), "param": [float(x) for x in p.detach().tolist()]}
        )
    case = {"optimizer": name, "init": INIT, "steps": steps}
    case.update(extra)
    return case


cases = [
    run(
        "adamw",
        lambda ps: torch.optim.AdamW(
            ps, lr=0.0, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, foreach=False
        ),
        0.05,
        {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
    ),
    run(
        "sgd",
        lambda ps: torch.optim.SGD(ps, lr=0.0, momentum=0.9, foreach=False),
        0.1,
        {"momentum": 0.9},
    ),
]
OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(
    json.dumps(
        {"generator": "scripts/golden/qat_optimizers.py", "torch": torch.__version__, "cases": cases},
        indent=1,
    )
    + "\n"
)
print(f"wrote {OUT}")
