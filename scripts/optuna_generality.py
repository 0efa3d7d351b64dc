#!/usr/bin/env python3
"""Optuna on sft-search's generality set: the functions of `sft-search bench sampler` that are
not in ../shared/anchors (hartmann3, ackley5, levy4, styblinski-tang4, six-hump-camel,
goldstein-price, mixed-ft; shekel4, michalewicz5, rastrigin4, powell4), defined exactly as src/objective/synthetic.rs defines them.

It adds them to the anchors' own harness (../shared/anchors/optuna_bench.py) and runs it, so
the protocol, the output (one JSON line per seed, `best_so_far`, `ask_s`) and `--summarize`
are the anchors' own:

  python3 scripts/optuna_generality.py --function ackley5 --sampler gp --trials 50 --seeds 10
  python3 scripts/optuna_generality.py --summarize runs.jsonl

Needs optuna (5.0 for the anchors' figures), torch and scipy (for GPSampler).
"""
from __future__ import annotations

import math
import os
import sys
from typing import Any, Dict

HERE = os.path.dirname(os.path.abspath(__file__))
ANCHORS = os.environ.get("SFT_ANCHORS", os.path.join(HERE, "..", "..", "shared", "anchors"))
sys.path.insert(0, ANCHORS)

import optuna_bench as ob  # noqa: E402
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402

H3_ALPHA = [1.0, 1.2, 3.0, 3.2]
H3_A = [[3.0, 10.0, 30.0], [0.1, 10.0, 35.0], [3.0, 10.0, 30.0], [0.1, 10.0, 35.0]]
H3_P = [[0.3689, 0.1170, 0.2673], [0.4699, 0.4387, 0.7470], [0.1091, 0.8732, 0.5547],
        [0.0381, 0.5743, 0.8828]]
# optimizer: (best log10 lr, best log10 weight decay, excess loss at its own optimum)
MIXED_FT_OPTIMIZERS = {"sgd": (-1.7, -4.0, 0.06), "adam": (-3.4, -5.0, 0.015), "adamw": (-3.1, -2.0, 0.0)}


def xs(p: Dict[str, Any], d: int):
    return [p[f"x{j}"] for j in range(d)]


def hartmann3(p):
    x = xs(p, 3)
    total = 0.0
    for i in range(4):
        inner = sum(H3_A[i][j] * (x[j] - H3_P[i][j]) ** 2 for j in range(3))
        total += H3_ALPHA[i] * math.exp(-inner)
    return -total


def ackley5(p):
    x = xs(p, 5)
    n = len(x)
    sq = sum(v * v for v in x) / n
    cs = sum(math.cos(2.0 * math.pi * v) for v in x) / n
    return -20.0 * math.exp(-0.2 * math.sqrt(sq)) - math.exp(cs) + 20.0 + math.e


def levy4(p):
    w = [1.0 + (v - 1.0) / 4.0 for v in xs(p, 4)]
    middle = sum((wi - 1.0) ** 2 * (1.0 + 10.0 * math.sin(math.pi * wi + 1.0) ** 2) for wi in w[:3])
    last = w[3]
    return math.sin(math.pi * w[0]) ** 2 + middle + (last - 1.0) ** 2 * (1.0 + math.sin(2.0 * math.pi * last) ** 2)


def styblinski_tang4(p):
    return 0.5 * sum(v**4 - 16.0 * v * v + 5.0 * v for v in xs(p, 4))


def six_hump_camel(p):
    x1, x2 = p["x1"], p["x2"]
    return (4.0 - 2.1 * x1 * x1 + x1**4 / 3.0) * x1 * x1 + x1 * x2 + (-4.0 + 4.0 * x2 * x2) * x2 * x2


def goldstein_price(p):
    x1, x2 = p["x1"], p["x2"]
    a = 1.0 + (x1 + x2 + 1.0) ** 2 * (19.0 - 14.0 * x1 + 3.0 * x1 * x1 - 14.0 * x2 + 6.0 * x1 * x2 + 3.0 * x2 * x2)
    b = 30.0 + (2.0 * x1 - 3.0 * x2) ** 2 * (18.0 - 32.0 * x1 + 12.0 * x1 * x1 + 48.0 * x2 - 36.0 * x1 * x2 + 27.0 * x2 * x2)
    return a * b


def mixed_ft(p):
    lr_opt, wd_opt, excess = MIXED_FT_OPTIMIZERS[p["optimizer"]]
    d = math.log10(p["learning_rate"]) - lr_opt
    l_lr = 0.25 * d * d + 0.1 * max(d, 0.0) ** 3
    l_wd = 0.02 * (math.log10(p["weight_decay"]) - wd_opt) ** 2
    l_wu = 0.4 * (p["warmup_ratio"] - 0.06 - 0.05 * max(d, 0.0)) ** 2
    ep = p["epochs"]
    l_ep = 0.4 * (math.exp(-0.4 * (ep - 1)) - math.exp(-0.4 * 7.0)) + 0.01 * max(ep - 8, 0) ** 2
    l_do = 0.5 * (p["dropout"] - 0.1) ** 2
    return 0.1 + excess + l_lr + l_wd + l_wu + l_ep + l_do


SHEKEL_BETA = [1.0, 2.0, 2.0, 4.0, 4.0, 6.0, 3.0, 7.0, 5.0, 5.0]
SHEKEL_C = [[4.0, 1.0, 8.0, 6.0, 3.0, 2.0, 5.0, 8.0, 6.0, 7.0], [4.0, 1.0, 8.0, 6.0, 7.0, 9.0, 3.0, 1.0, 2.0, 3.6],
            [4.0, 1.0, 8.0, 6.0, 3.0, 2.0, 5.0, 8.0, 6.0, 7.0], [4.0, 1.0, 8.0, 6.0, 7.0, 9.0, 3.0, 1.0, 2.0, 3.6]]


def shekel4(p):
    x = xs(p, 4)
    return -sum(1.0 / (sum((x[j] - SHEKEL_C[j][i]) ** 2 for j in range(4)) + SHEKEL_BETA[i] / 10.0) for i in range(10))


def michalewicz5(p):
    return -sum(math.sin(v) * math.sin((i + 1) * v * v / math.pi) ** 20 for i, v in enumerate(xs(p, 5)))


def rastrigin4(p):
    return 40.0 + sum(v * v - 10.0 * math.cos(2.0 * math.pi * v) for v in xs(p, 4))


def powell4(p):
    a, b, c, d = xs(p, 4)
    return (a + 10.0 * b) ** 2 + 5.0 * (c - d) ** 2 + (b - 2.0 * c) ** 4 + 10.0 * (a - d) ** 4


def floats(d: int, lo: float, hi: float):
    return {f"x{j}": FloatDistribution(lo, hi) for j in range(d)}


GENERALITY = {
    "hartmann3": {"f": hartmann3, "optimum": -3.862779787332663, "space": floats(3, 0.0, 1.0)},
    "ackley5": {"f": ackley5, "optimum": 0.0, "space": floats(5, -32.768, 32.768)},
    "levy4": {"f": levy4, "optimum": 0.0, "space": floats(4, -10.0, 10.0)},
    "styblinski-tang4": {"f": styblinski_tang4, "optimum": -156.66466281508568, "space": floats(4, -5.0, 5.0)},
    "six-hump-camel": {
        "f": six_hump_camel,
        "optimum": -1.0316284534898774,
        "space": {"x1": FloatDistribution(-3.0, 3.0), "x2": FloatDistribution(-2.0, 2.0)},
    },
    "goldstein-price": {
        "f": goldstein_price,
        "optimum": 3.0,
        "space": {"x1": FloatDistribution(-2.0, 2.0), "x2": FloatDistribution(-2.0, 2.0)},
    },
    "mixed-ft": {
        "f": mixed_ft,
        "optimum": 0.1,
        "space": {
            "optimizer": CategoricalDistribution(list(MIXED_FT_OPTIMIZERS)),
            "learning_rate": FloatDistribution(1e-5, 1e-1, log=True),
            "weight_decay": FloatDistribution(1e-6, 1e-1, log=True),
            "warmup_ratio": FloatDistribution(0.0, 0.3),
            "epochs": IntDistribution(1, 20),
            "dropout": FloatDistribution(0.0, 0.5),
        },
    },
    # The second generality set (added after every sampler choice of sft-search was made).
    "shekel4": {"f": shekel4, "optimum": -10.53644315348353, "space": floats(4, 0.0, 10.0)},
    "michalewicz5": {"f": michalewicz5, "optimum": -4.687658179088149, "space": floats(5, 0.0, math.pi)},
    "rastrigin4": {"f": rastrigin4, "optimum": 0.0, "space": floats(4, -5.12, 5.12)},
    "powell4": {"f": powell4, "optimum": 0.0, "space": floats(4, -4.0, 5.0)},
}
for spec in GENERALITY.values():
    spec["grid"] = {k: [] for k in spec["space"]}  # grid search is not offered on these
ob.FUNCTIONS.update(GENERALITY)

if __name__ == "__main__":
    sys.exit(ob.main())
