#!/usr/bin/env bash
# The GP on a conditional space against the same parameters without `when` (README,
# "Conditional parameters"): writes the objective and both study files into DIR, then runs
# `bench sampler --study` on each (20 seeds, 50 trials) and prints the summaries.
#   scripts/conditional-bench.sh [DIR] [--bin target/release/sft-search]
set -euo pipefail
dir=${1:-/tmp/conditional-bench}
bin=${BIN:-$(dirname "$0")/../target/release/sft-search}
mkdir -p "$dir"
cat > "$dir/objective.py" <<'PY'
import json, math, sys
p = json.load(sys.stdin)
lr = math.log10(p['lr'])
if p['optimizer'] == 'sgd':
    v = (lr + 1.5) ** 2 + 4 * (p['momentum'] - 0.9) ** 2
else:
    v = (lr + 3.5) ** 2 + 0.3 + (0.05 if p['amsgrad'] == 'yes' else 0)
print(json.dumps({'value': v}))
PY
cat > "$dir/cond.toml" <<'TOML'
[study]
name = "cond"
direction = "minimize"
n_trials = 50
seed = 2

[space]
lr = { type = "float", low = 1e-5, high = 1.0, log = true }
optimizer = ["adamw", "sgd"]
momentum = { type = "float", low = 0.0, high = 0.99, when = { optimizer = "sgd" } }
amsgrad = { choices = ["yes", "no"], when = { optimizer = ["adamw"] } }

[sampler]
kind = "gp"

[objective]
kind = "command"
command = ["python3", "objective.py"]
TOML
sed 's/, when = {[^}]*}//' "$dir/cond.toml" > "$dir/flat.toml"
for study in cond flat; do
    "$bin" bench sampler --study "$dir/$study.toml" --trials 50 --seeds 20 --optimum 0 --jobs 2 > "$dir/$study.jsonl"
    "$bin" bench sampler --study "$dir/$study.toml" --trials 50 --seeds 20 --optimum 0 --jobs 2 --summary | tail -2
done
"$bin" bench sampler --study "$dir/cond.toml" --sampler random --trials 50 --seeds 20 --optimum 0 --jobs 2 --summary | tail -2
for study in cond flat; do
    python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print(sys.argv[2], 'seeds above 0.01 after 25 trials:', sum(x['best'][24] > 0.01 for x in r), 'of', len(r))" "$dir/$study.jsonl" "$study"
done
