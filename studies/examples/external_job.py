"""One job of an external study: asks `sft-search` for trials until the study's budget is
spent, "trains" each (replace `train_one_epoch` with your own code), reports every epoch and
tells the result. Run several at once; each gets its own trials.

    python3 external_job.py external.toml        # SFT_SEARCH names the binary (default: on PATH)
"""
import json
import math
import os
import subprocess
import sys

study = sys.argv[1] if len(sys.argv) > 1 else "external.toml"
binary = os.environ.get("SFT_SEARCH", "sft-search")


def cli(*args):
    """Runs `sft-search ARGS` and returns its JSON answer (`ask` exits 3 when nothing is left)."""
    done = subprocess.run([binary, *args], capture_output=True, text=True)
    if done.returncode not in (0, 3):
        sys.exit(f"sft-search {' '.join(args)} failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def train_one_epoch(p, epoch):
    """A stand-in for training: accuracy after `epoch` epochs with parameters `p`."""
    if p["optimizer"] == "sgd":
        best = 0.90 - 0.02 * (math.log10(p["learning_rate"]) + 1.5) ** 2 - 0.2 * (p["momentum"] - 0.9) ** 2
    else:
        best = 0.89 - 0.02 * (math.log10(p["learning_rate"]) + 3.5) ** 2
    best -= 0.005 if p["batch_size"] == 32 else 0.0
    return best - 0.05 / epoch


while (trial := cli("ask", study))["number"] is not None:
    number, params = str(trial["number"]), trial["params"]
    for epoch in range(1, 4):
        accuracy = train_one_epoch(params, epoch)
        told = cli("tell", study, "--trial", number, "--step", str(epoch), "--value", repr(accuracy))
        if told["pruned"]:
            print(f"trial {number} pruned after epoch {epoch}")
            break
    else:
        cli("tell", study, "--trial", number, "--value", repr(accuracy))
        print(f"trial {number}: {params} -> {accuracy:.4f}")
print(f"no trial left: {trial['reason']}")
