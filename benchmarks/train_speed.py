"""Training throughput of one model under the speed options `edgeft finetune` has (one run, interleaved):
fp32 vs bf16 autocast (CPUs with AVX512_BF16/AMX), channels_last on/off, torch.compile on/off.

    .venv/bin/python benchmarks/train_speed.py [--model efficientnet_lite0] [--size 64] [--batch 128] [--steps 12]

Each variant: a fresh model, warm-up steps (and compilation) untimed, then `--steps` timed optimizer steps on
random inputs of the recipe's shape (the data pipeline is timed separately by `edgeft finetune`'s img/s), in
`--rounds` interleaved rounds; images/s is the median over rounds, with the range."""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn as nn


def step_fn(model, opt, x, y, dtype):
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile variants (slow to compile)")
    a = ap.parse_args()
    from edgeft.models import create_model
    from edgeft.targets import real_cpu_features
    from edgeft.utils.env import fingerprint

    fp = fingerprint()
    feats = real_cpu_features()
    print(f"machine: {fp['cpu_model']} ({fp['cores_logical']} cores), {feats.describe()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {a.model} {a.size}px batch {a.batch}")
    variants = [("fp32, NCHW", None, False, False), ("fp32, channels_last", None, True, False),
                ("bf16 autocast, channels_last", torch.bfloat16, True, False),
                ("bf16 autocast, NCHW", torch.bfloat16, False, False)]
    if a.compile:
        variants += [("fp32, channels_last, compile", None, True, True),
                     ("bf16 autocast, channels_last, compile", torch.bfloat16, True, True)]
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(a.batch, 3, a.size, a.size, generator=g)
    y = torch.randint(0, 10, (a.batch,), generator=g)
    state = {}
    for name, dtype, cl, comp in variants:
        torch.manual_seed(0)
        m = create_model(a.model, 10, pretrained=True).train()
        x = x0
        if cl:
            m = m.to(memory_format=torch.channels_last)
            x = x0.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        run = torch.compile(m) if comp else m
        t = time.perf_counter()
        for _ in range(3):
            step_fn(run, opt, x, y, dtype)
        state[name] = (run, opt, x, dtype, [], time.perf_counter() - t)
    for r in range(a.rounds):
        for name in (list(state)[r % len(state):] + list(state)[:r % len(state)]):
            run, opt, x, dtype, rates, _ = state[name]
            step_fn(run, opt, x, y, dtype)
            t = time.perf_counter()
            for _ in range(a.steps):
                step_fn(run, opt, x, y, dtype)
            rates.append(a.steps * a.batch / (time.perf_counter() - t))
    base = np.median(state[variants[0][0]][4])
    print("| variant | img/s (median [range]) | vs fp32 NCHW | warm-up incl. compile (s) |")
    print("|---|---|---|---|")
    for name, (_, _, _, _, rates, warm) in state.items():
        med = float(np.median(rates))
        print(f"| {name} | {med:.0f} [{min(rates):.0f}, {max(rates):.0f}] | {med / base:.2f}x | {warm:.1f} |")


if __name__ == "__main__":
    main()
