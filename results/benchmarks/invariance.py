"""Which kernels keep a trial's arithmetic independent of its pack (batch invariance)?

Part 1, the layers: one trial's convolution (LeNet's first and second, grouped over a pack of
K trials as PackedLeNet runs them, channels-last on a CPU) at several pack sizes and
positions, beside other trials' random data. Its output, weight gradient and bias gradient
are compared bit for bit with the same trial in a pack of 2.

Part 2, the engine: one trial trained for 3 epochs of 2 steps alone and in packs of 3, 4, 5
and 8 at various positions, and beside trials of its own seed; its final weights and curves
compared bit for bit with the trial alone.

    .venv/bin/python results/benchmarks/invariance.py [cpu|cuda]
"""

from __future__ import annotations

import sys

import torch
from torch.nn import functional as F

from lrsweep import schedules
from lrsweep.train import data, engine

device = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cpu")
B = 256


def layer_check() -> None:
    gen = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.rand(*shape, generator=gen)

    layers = {"conv1 (1→6, 5×5, pad 2)": (1, 6, 28, 2), "conv2 (6→16, 5×5)": (6, 16, 14, 0)}
    for name, (cin, cout, side, pad) in layers.items():
        mine = (r(B, cin, side, side), r(cout, cin, 5, 5) - 0.5, r(cout) - 0.5)
        grad = r(B, cout, side + 2 * pad - 4, side + 2 * pad - 4) - 0.5
        others = [(r(B, cin, side, side), r(cout, cin, 5, 5) - 0.5, r(cout) - 0.5)
                  for _ in range(32)]

        def run(k: int, pos: int) -> list[torch.Tensor]:
            xs, ws, bs = (list(t) for t in zip(*others[:k]))
            xs[pos], ws[pos], bs[pos] = mine
            fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format
            x = torch.cat(xs, 1).to(device).contiguous(memory_format=fmt)
            w = torch.cat(ws).to(device).contiguous(memory_format=fmt).requires_grad_()
            b = torch.cat(bs).to(device).requires_grad_()
            y = F.conv2d(x, w, b, padding=pad, groups=k)
            part = slice(pos * cout, (pos + 1) * cout)
            (y[:, part] * grad.to(device)).sum().backward()
            return [y[:, part].contiguous(), w.grad[part].contiguous(), b.grad[part]]

        reference = run(2, 0)
        for k, pos in ((1, 0), (2, 1), (3, 0), (3, 2), (4, 3), (5, 4), (6, 2), (8, 5),
                       (16, 7), (32, 31)):
            same = [torch.equal(a, b) for a, b in zip(run(k, pos), reference)]
            print(f"{name:<24} K={k:<2} position {pos:<2}: output {same[0]!s:<5} "
                  f"weight grad {same[1]!s:<5} bias grad {same[2]!s:<5}")


def engine_check() -> None:
    splits = data.load(device, validation=200, subset=512)

    def cfg(seed, lr, name="constant", **kw):
        return engine.TrialConfig(schedules.build(name, base_lr=lr, **kw), seed=seed,
                                  epochs=3, batch_size=256)

    trial = cfg(5, 0.1)
    others = [cfg(1, 0.3), cfg(2, 0.05, "sqrt"), cfg(3, 0.2, "cosine", max_update=3),
              cfg(4, 0.1), cfg(6, 0.5), cfg(7, 0.02), cfg(8, 0.3, "sqrt")]
    packs = {"alone": [trial], "first of 4": [trial] + others[:3],
             "last of 4": others[3:6] + [trial], "2nd of 3": [others[0], trial, others[1]],
             "4th of 5": others[2:5] + [trial, others[6]],
             "6th of 8": others[:5] + [trial] + others[5:7],
             "beside its own seed": [trial, cfg(5, 0.3), cfg(5, 0.02), cfg(5, 0.1, "sqrt")]}
    runs = {name: engine.train_pack(configs, splits)[configs.index(trial)]
            for name, configs in packs.items()}
    alone = runs["alone"]
    for name, result in runs.items():
        worst = max((result.state_dict[k] - v).abs().max().item()
                    for k, v in alone.state_dict.items())
        curves = [(m.train_loss, m.val_loss, m.val_acc, m.test_acc, m.test_nll, m.test_ece)
                  for m in result.epochs]
        same = curves == [(m.train_loss, m.val_loss, m.val_acc, m.test_acc, m.test_nll,
                           m.test_ece) for m in alone.epochs]
        print(f"engine: trial {name:<20} weights' largest difference from alone {worst:.1e}, "
              f"curves identical {same}")


if __name__ == "__main__":
    print(f"# {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    layer_check()
    engine_check()
