#!/usr/bin/env python3
"""2-D objectives with failing settings, for `sft-search bench sampler --study
scripts/failure_cases.toml` (a `kind = "command"` objective: parameters as JSON on stdin, the
value or an error as a JSON line). CASE picks one (docs/sampler-benchmark.md, *Failed
settings*):

  corner  a bowl at (0.3, 0.7) that fails for x > 0.9 (optimum 0)
  third   a bowl at (0.2, 0.4) that fails for x > 0.67, a third of the box (optimum 0)
  edge    a bowl at (0.95, 0.5) that fails for x > 0.9: the feasible optimum 0.0025 on the edge
  random  Branin on the unit square where 20% of the settings fail, fixed per setting as a
          diverging fine-tuning run is under its seed (optimum 0.397887357729738)
"""
import hashlib
import json
import math
import os
import sys

p = json.load(sys.stdin)
x, y = p["x"], p["y"]
case = os.environ.get("CASE", "corner")
if case == "corner":
    fail, v = x > 0.9, (x - 0.3) ** 2 + (y - 0.7) ** 2
elif case == "third":
    fail, v = x > 0.67, (x - 0.2) ** 2 + (y - 0.4) ** 2
elif case == "edge":
    fail, v = x > 0.9, (x - 0.95) ** 2 + (y - 0.5) ** 2
elif case == "random":
    h = int(hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest()[:8], 16) / 2**32
    x1, x2 = -5 + 15 * x, 15 * y
    fail = h < 0.2
    v = (x2 - 5.1 / (4 * math.pi**2) * x1**2 + 5 / math.pi * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10
else:
    sys.exit(f"unknown CASE {case!r}")
if fail:
    print(json.dumps({"error": "diverged"}))
    sys.exit(1)
print(json.dumps({"value": v}))
