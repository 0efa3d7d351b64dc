#!/usr/bin/env bash
# The GPU check of issue 6, in one go: training-step throughput (ours beside PyTorch's) and the
# search race (our GP study against transformers + Optuna TPE on SST-2), printed as one table.
#
#   scripts/gpu-check.sh --prepare [--bin target-cuda/release/sft-search]   # here: fill gpu-payload/
#   scripts/gpu-check.sh                                                     # on the GPU machine
#   scripts/gpu-check.sh --cpu                                               # here: the same path on
#                                                                            # the CPU, on a tiny subset
#   scripts/gpu-check.sh --quick                                             # on the GPU machine: a
#                                                                            # smoke run (~2 min)
#   scripts/gpu-check.sh --only kernels,race                                 # some stages only
#                                                                            # (kernels, bench, torch, race, slots, predict, oom, tokens)
#
# --prepare (on the build machine) copies into the ignored folder gpu-payload/: the binary
# (xz-compressed), all-MiniLM-L6-v2 stored as fp16 safetensors (loaded as f32), the SST-2 train
# and dev CSVs, and the PyTorch anchors — everything the GPU machine needs, under 64 MiB.
# The run writes gpu-payload/out/ (JSON lines, the study database, the table) and prints the
# table; copy it into the README with the date and the card. Where $OUT is set (the device
# tool), the small result files are copied there after every stage, so a run cut short still
# returns what it measured.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
payload="$here/gpu-payload"
mode=gpu
quick=0
only="kernels,bench,torch,race,slots,predict,oom,tokens"
bin=""
shared="${SFT_SHARED:-$here/../shared}"
while [ $# -gt 0 ]; do
  case "$1" in
    --prepare) mode=prepare ;;
    --cpu) mode=cpu ;;
    --quick) quick=1 ;;
    --only) only="$2"; shift ;;
    --bin) bin="$2"; shift ;;
    --shared) shared="$2"; shift ;;
    --payload) payload="$2"; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "[gpu-check $(date +%H:%M:%S)] $*" >&2; }
stage() { case ",$only," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
# Copies the result files to $OUT (the device tool returns at most 8 files, so all but the table
# travel in one archive, remade after every stage).
save() {
  [ -n "${OUT:-}" ] || return 0
  [ -f "$out/table.md" ] && cp "$out/table.md" "$OUT/"
  (cd "$out" && tar -czf "$OUT/gpu-check.tar.gz" --exclude=sft-search --exclude=bert-base-random --exclude=pred-model --exclude=tok-model \
    --exclude='*.trials' . 2>/dev/null)
  return 0
}

if [ "$mode" = prepare ]; then
  [ -n "$bin" ] || bin="$here/target-cuda/release/sft-search"
  [ -x "$bin" ] || { echo "gpu-check: no binary at $bin (build it: see README, GPUs)" >&2; exit 1; }
  minilm="${SFT_MINILM:-}"
  if [ -z "$minilm" ]; then
    minilm="$payload/.minilm-f32"
    [ -f "$minilm/model.safetensors" ] || bash "$shared/scripts/get-minilm.sh" "$minilm"
  fi
  rm -rf "$payload/bin" "$payload/minilm" "$payload/data" "$payload/anchors" "$payload/out"
  mkdir -p "$payload/bin" "$payload/minilm" "$payload/data/sst2_train" "$payload/data/sst2_dev" "$payload/anchors"
  log "stripping and compressing $bin"
  stripped="$payload/.sft-search-stripped"
  strip -o "$stripped" "$bin" 2>/dev/null || cp "$bin" "$stripped"
  xz -T0 -9 -c "$stripped" > "$payload/bin/sft-search.xz"
  rm -f "$stripped"
  log "MiniLM as fp16 safetensors"
  python3 - "$minilm" "$payload/minilm" <<'EOF'
import shutil, sys
from pathlib import Path
from safetensors.numpy import load_file, save_file
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
t = load_file(src / "model.safetensors")
save_file({k: (v.astype("float16") if v.dtype.kind == "f" else v) for k, v in t.items()}, dst / "model.safetensors")
for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]:
    if (src / f).exists():
        shutil.copy(src / f, dst / f)
EOF
  cp "$shared/data/sst2_train/data.csv" "$payload/data/sst2_train/"
  cp "$shared/data/sst2_dev/data.csv" "$payload/data/sst2_dev/"
  mkdir -p "$payload/data/wnut17"
  cp "$shared/data/wnut17/train.conll" "$shared/data/wnut17/dev.conll" "$shared/data/wnut17/test.conll" "$payload/data/wnut17/"
  cp "$shared/anchors/torch-gpu-h200.jsonl" "$shared/anchors/torch_finetune_bench.py" "$payload/anchors/"
  cp "$shared/anchors/gpu-hpo/sst2-minilm-h200.jsonl" "$payload/anchors/"
  cp "$shared/scripts/run-with-gpu-libs.sh" "$payload/bin/"
  du -sh "$payload" | sed 's/^/payload: /' >&2
  total=$(du -sb --exclude=.minilm-f32 --exclude=out "$payload" | cut -f1)
  [ "$total" -le $((64 * 1024 * 1024)) ] || { echo "gpu-check: payload is $total bytes, over 64 MiB" >&2; exit 1; }
  exit 0
fi

out="$payload/out"
mkdir -p "$out"
# The binary: the payload's (GPU machine) or the local build (--cpu).
if [ -z "$bin" ]; then
  if [ -f "$payload/bin/sft-search.xz" ] && [ "$mode" = gpu ]; then
    xz -d -c "$payload/bin/sft-search.xz" > "$out/sft-search" && chmod +x "$out/sft-search"
    bin="$out/sft-search"
  else
    bin="$here/target/release/sft-search"
    [ -x "$bin" ] || bin="$here/target/debug/sft-search"
  fi
fi
[ -x "$bin" ] || { echo "gpu-check: no sft-search binary (pass --bin)" >&2; exit 1; }
# Runs the binary (under `timeout $limit` when limit is set), with the GPU machine's libraries.
run() {
  local t=()
  [ -n "${limit:-}" ] && t=(timeout "$limit")
  if [ "$mode" = gpu ] && [ -f "$payload/bin/run-with-gpu-libs.sh" ]; then
    "${t[@]}" bash "$payload/bin/run-with-gpu-libs.sh" "$bin" "$@"
  else
    "${t[@]}" "$bin" "$@"
  fi
}

# Data, model and anchors: the payload's, else ../shared and a MiniLM folder.
data="$payload/data"
[ -f "$data/sst2_train/data.csv" ] || data="$shared/data"
anchors="$payload/anchors"
[ -f "$anchors/torch-gpu-h200.jsonl" ] || anchors="$shared/anchors"
minilm="${SFT_MINILM:-$payload/minilm}"
[ -f "$minilm/model.safetensors" ] || { echo "gpu-check: no MiniLM at $minilm (set SFT_MINILM or run --prepare)" >&2; exit 1; }

if [ "$mode" = gpu ]; then
  device=cuda:0
  card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo "unknown GPU")
  batches="32 64"; seq=128; steps=20
  [ "$quick" = 1 ] && { batches="32"; steps=10; }
else
  device=cpu
  card="CPU ($(nproc) cores, --cpu: tiny subset)"
  batches="4"; seq=32; steps=2
fi
log "device $device: $card"

# 0. The fused kernels against the CPU (every op forward and backward, and MiniLM's training step).
if stage kernels; then
  log "bench kernels (the device's fused kernels against the CPU)"
  limit=120 run bench kernels --device "$device" --model "$minilm" > "$out/kernels.txt" 2>&1 \
    || log "bench kernels failed: see kernels.txt"
  grep -v '^LD_LIBRARY_PATH\|^\s*lib' "$out/kernels.txt" | tail -8 >&2 || true
  save
fi

# 1. The search race: the protocol of ../shared/anchors/gpu-hpo/ with our GP sampler and
#    several trials per GPU.
study="$out/race.toml"
if [ "$mode" = gpu ]; then
  extra_data=""; n_trials=8; per_device=4; race_precision=bf16; devices='["cuda:0"]'; race_limit=${RACE_LIMIT:-450}
  [ "$quick" = 1 ] && { extra_data="max_rows = 4000"; n_trials=4; race_limit=100; }
else
  extra_data="max_rows = 600"; n_trials=3; per_device=1; race_precision=fp32; devices='["cpu"]'; race_limit=600
fi
race_s="-"
echo '{}' > "$out/race-best.json"
cat > "$study" <<EOF
[study]
name = "gpu-race"
direction = "maximize"
metric = "accuracy"
n_trials = $n_trials
seed = 0
storage = "race.db"

[space]
learning_rate = { type = "float", low = 1e-5, high = 2e-4, log = true }
batch_size = { type = "categorical", choices = [32, 64] }
epochs = { type = "int", low = 1, high = 2 }
freeze_layers = { type = "int", low = 0, high = 6 }

[sampler]
kind = "gp"

[objective]
kind = "finetune"

[model]
path = "$minilm"

[data]
path = "$data/sst2_train/data.csv"
test_path = "$data/sst2_dev/data.csv"
split = [0.95, 0.05]
split_seed = 42
$extra_data

[train]
max_length = 64
weight_decay = 0.01
warmup_ratio = 0.06
precision = "$race_precision"
keep_checkpoints = "best"

[execution]
devices = $devices
trials_per_device = $per_device
EOF
if stage race; then
rm -rf "$out/race.db" "$out/race.db-wal" "$out/race.db-shm" "$out/race.trials"
log "search race: $n_trials trials, $per_device per device"
dmon_pid=""
if [ "$mode" = gpu ] && command -v nvidia-smi >/dev/null; then
  nvidia-smi dmon -s um -d 1 > "$out/dmon.log" 2>&1 &
  dmon_pid=$!
fi
start=$(date +%s.%N)
limit=$race_limit run run "$study" > "$out/race.log" 2>&1 || log "the race failed or ran out of time (see race.log)"
end=$(date +%s.%N)
[ -n "$dmon_pid" ] && kill "$dmon_pid" 2>/dev/null
race_s=$(python3 -c "print(round($end - $start, 1))")
run best "$study" --format json > "$out/race-best.json" || echo '{}' > "$out/race-best.json"
run trials "$study" >> "$out/race.log" 2>&1 || true
run trials "$study" --format json > "$out/race-trials.json" 2>/dev/null || true
tail -4 "$out/race.log" >&2
save
fi

# 1b. A slot whose device cannot be opened: a second slot on a GPU index the machine does not have.
#     Expected: that slot's first trial fails as "device error: ...", the slot takes no more trials,
#     the trial runs again on the slot that works, and every trial ends COMPLETE there.
if stage slots; then
  if [ "$mode" = gpu ]; then
    n_gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || echo 1)
    slots_devices="[\"cuda:0\", \"cuda:$n_gpus\"]"; slots_rows=3000
  else
    slots_devices='["cpu", "cpu"]'; slots_rows=300
  fi
  rm -rf "$out/slots.db" "$out/slots.db-wal" "$out/slots.db-shm" "$out/slots.trials"
  sed -e 's/^name = "gpu-race"/name = "gpu-slots"/' -e 's/^storage = "race.db"/storage = "slots.db"/' \
      -e 's/^n_trials = .*/n_trials = 4/' -e 's/^kind = "gp"/kind = "random"/' \
      -e "s/^devices = .*/devices = $slots_devices/" -e 's/^trials_per_device = .*/trials_per_device = 1/' \
      -e 's/^max_rows = .*//' -e "s/^split_seed = 42/split_seed = 42\\nmax_rows = $slots_rows/" \
      -e 's/^keep_checkpoints = .*/keep_checkpoints = "none"/' "$study" > "$out/slots.toml"
  log "slots: devices $slots_devices (the second cannot be opened), 4 trials"
  st=0; limit=180 run run "$out/slots.toml" > "$out/slots.log" 2>&1 || st=$?; echo "exit status $st" >> "$out/slots.log"
  run trials "$out/slots.toml" --format json > "$out/slots-trials.json" 2>/dev/null || true
  grep -i "device\|slot\|exit status" "$out/slots.log" | tail -6 >&2 || true
  # devices = "auto": every visible GPU (one slot each) in a CUDA build, else one CPU slot.
  sed -e 's/^name = "gpu-slots"/name = "gpu-auto"/' -e 's/^storage = "slots.db"/storage = "auto.db"/' \
      -e 's/^n_trials = .*/n_trials = 2/' -e 's/^devices = .*/devices = "auto"/' "$out/slots.toml" > "$out/auto.toml"
  rm -rf "$out/auto.db" "$out/auto.db-wal" "$out/auto.db-shm" "$out/auto.trials"
  log "auto: devices = \"auto\", 2 trials"
  st=0; limit=120 run run "$out/auto.toml" > "$out/auto.log" 2>&1 || st=$?; echo "exit status $st" >> "$out/auto.log"
  grep -i "slot\|exit status" "$out/auto.log" | tail -3 >&2 || true
  save
fi

# 1b'. Export and predict on the device: a one-trial study, exported, then `predict` with
#     scoring on the device and on the CPU over SST-2 dev; the three figures (the study's own test
#     evaluation, predict on the device, predict on the CPU) should agree.
if stage predict; then
  rm -rf "$out/pred.db" "$out/pred.db-wal" "$out/pred.db-shm" "$out/pred.trials" "$out/pred-model"
  pred_rows=3000; [ "$mode" = gpu ] || pred_rows=300
  sed -e 's/^name = "gpu-race"/name = "gpu-pred"/' -e 's/^storage = "race.db"/storage = "pred.db"/' \
      -e 's/^n_trials = .*/n_trials = 1/' -e 's/^kind = "gp"/kind = "random"/' \
      -e 's/^max_rows = .*//' -e "s/^split_seed = 42/split_seed = 42\\nmax_rows = $pred_rows/" \
      -e 's/^precision = .*/precision = "fp32"/' -e 's/^trials_per_device = .*/trials_per_device = 1/' "$study" > "$out/pred.toml"
  log "predict: a one-trial study, exported, scored on $device and on the CPU"
  { limit=180 run run "$out/pred.toml" && run export "$out/pred.toml" --out "$out/pred-model" \
      && limit=120 run predict --model "$out/pred-model" --input "$data/sst2_dev/data.csv" --device "$device" \
           --output "$out/pred-device.csv" --metrics "$out/pred-device.json" \
      && limit=300 run predict --model "$out/pred-model" --input "$data/sst2_dev/data.csv" --device cpu \
           --output "$out/pred-cpu.csv" --metrics "$out/pred-cpu.json"; } > "$out/pred.log" 2>&1 \
    || log "the predict stage failed (see pred.log)"
  run best "$out/pred.toml" --format json > "$out/pred-best.json" 2>/dev/null || true
  python3 - "$out" <<'EOF' >&2 || true
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def get(name, *keys):
    try:
        v = json.loads((out / name).read_text())
        for k in keys:
            v = v[k]
        return v
    except Exception:
        return None
study = get("pred-best.json", "test", "accuracy")
rows = sum(map(sum, get("pred-best.json", "test", "confusion_matrix") or []))
dev, cpu = get("pred-device.json", "accuracy"), get("pred-cpu.json", "accuracy")
scored = get("pred-device.json", "rows_scored")
print(f"predict: test accuracy in the study {study} ({rows} rows), predict on the device {dev}, on the CPU {cpu} ({scored} rows)")
EOF
  save
fi

# 1b'. Token classification (named entities, WNUT 2017) on the device: one trial (the
#     Trainer's defaults), its test evaluation, the export, and predict on test.conll on the device
#     and on the CPU. Expected: the three F1 figures agree (predict also counts the few words
#     beyond 128 tokens, which the study leaves out: a difference of about 0.0005).
if stage tokens; then
  rm -rf "$out/tok.db" "$out/tok.db-wal" "$out/tok.db-shm" "$out/tok.trials" "$out/tok-model"
  # --cpu: 120 sentences of each file, and so the tag set is declared (a sample may lack a tag).
  tok_rows=""
  [ "$mode" = gpu ] || tok_rows='max_rows = 120
labels = ["O", "B-corporation", "I-corporation", "B-creative-work", "I-creative-work", "B-group", "I-group", "B-location", "I-location", "B-person", "I-person", "B-product", "I-product"]'
  wnut="$data/wnut17"; [ -f "$wnut/train.conll" ] || wnut="$shared/data/wnut17"
  cat > "$out/tok.toml" <<EOF
[study]
name = "gpu-tokens"
direction = "maximize"
metric = "f1"
n_trials = 1
storage = "tok.db"

[space]
learning_rate = { type = "categorical", choices = [5e-5] }

[objective]
kind = "finetune"

[model]
path = "$minilm"

[data]
path = "$wnut/train.conll"
valid_path = "$wnut/dev.conll"
test_path = "$wnut/test.conll"
problem = "token_classification"
$tok_rows

[train]
batch_size = 16
epochs = 3
max_length = 128
weight_decay = 0.01
warmup_ratio = 0.1
seed = 42

[execution]
devices = ["$device"]
EOF
  log "tokens: a one-trial WNUT 2017 study on $device, exported, test.conll tagged on $device and on the CPU"
  { limit=600 run run "$out/tok.toml" && run export "$out/tok.toml" --out "$out/tok-model" \
      && limit=120 run predict --model "$out/tok-model" --input "$wnut/test.conll" --device "$device" \
           --output "$out/tok-device.conll" --metrics "$out/tok-device.json" \
      && limit=300 run predict --model "$out/tok-model" --input "$wnut/test.conll" --device cpu \
           --output "$out/tok-cpu.conll" --metrics "$out/tok-cpu.json"; } > "$out/tok.log" 2>&1 \
    || log "the tokens stage failed (see tok.log)"
  run best "$out/tok.toml" --format json > "$out/tok-best.json" 2>/dev/null || true
  python3 - "$out" <<'EOF' >&2 || true
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def get(name, *keys):
    try:
        v = json.loads((out / name).read_text())
        for k in keys:
            v = v[k]
        return v
    except Exception:
        return None
print(f"tokens: valid F1 {get('tok-best.json', 'value')}, test F1 in the study {get('tok-best.json', 'test', 'f1')}, "
      f"predict on the device {get('tok-device.json', 'f1')}, on the CPU {get('tok-cpu.json', 'f1')}")
EOF
  save
fi

# 1c. A real out-of-memory error: one trial whose batch does not fit on the card. Expected: the
#     trial runs again with half the micro-batch until it fits (metrics.oom_retry_micro_batch_size;
#     on an H200, MiniLM completes at 4,096), and the study ends normally.
if stage oom && [ "$mode" = gpu ]; then
  rm -rf "$out/oom.db" "$out/oom.db-wal" "$out/oom.db-shm" "$out/oom.trials"
  cat > "$out/oom.toml" <<EOF
[study]
name = "gpu-oom"
direction = "maximize"
metric = "accuracy"
n_trials = 1
storage = "oom.db"

[space]
learning_rate = { type = "float", low = 1e-5, high = 2e-4, log = true }

[sampler]
kind = "random"

[objective]
kind = "finetune"

[model]
path = "$minilm"

[data]
path = "$data/sst2_train/data.csv"
test_path = "$data/sst2_dev/data.csv"
split = [0.95, 0.05]

[train]
max_length = 64
batch_size = ${OOM_BATCH:-16384}
epochs = 1
keep_checkpoints = "none"

[execution]
devices = ["cuda:0"]
EOF
  log "oom: one trial with batch_size ${OOM_BATCH:-16384} on one card"
  st=0; limit=240 run run "$out/oom.toml" > "$out/oom.log" 2>&1 || st=$?; echo "exit status $st" >> "$out/oom.log"
  run trials "$out/oom.toml" --format json > "$out/oom-trials.json" 2>/dev/null || true
  grep -i "memory\|retry\|ended\|exit status" "$out/oom.log" | cut -c1-300 | tail -6 >&2 || true
  save
fi

# 2. A BERT-base-sized model with random weights (throughput does not depend on the values).
base="$out/bert-base-random"
if stage bench && [ ! -f "$base/model.safetensors" ]; then
  python3 - "$base" "$minilm" <<'EOF'
import shutil, sys
from pathlib import Path
from transformers import BertConfig, BertForSequenceClassification
dst, minilm = Path(sys.argv[1]), Path(sys.argv[2])
BertForSequenceClassification(BertConfig(num_labels=2)).save_pretrained(dst, safe_serialization=True)
for f in ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"]:
    if (minilm / f).exists():
        shutil.copy(minilm / f, dst / f)
EOF
fi

# 3. Training-step throughput: ours, fp32 and bf16.
bench="$out/bench-train.jsonl"
: > "$bench"
stage bench || models=""
for model in ${models-minilm-l6 bert-base}; do
  dir=$minilm; [ "$model" = bert-base ] && dir=$base
  for precision in fp32 bf16; do
    for b in $batches; do
      log "bench train $model $precision batch $b seq $seq"
      if line=$(limit=120 run bench train --model "$dir" --batch-size "$b" --seq-len "$seq" --steps "$steps" \
          --device "$device" --precision "$precision" --format json); then
        echo "{\"model\": \"$model\", \"dtype\": \"$precision\", \"batch\": $b, \"seq\": $seq, \"ours\": $line}" >> "$bench"
      else
        log "bench train $model $precision batch $b failed"
      fi
      save
    done
  done
done

# PyTorch beside it on the same card when there is time (torch is installed on the GPU machine).
torch_fresh="$out/torch-gpu.jsonl"
: > "$torch_fresh"
if [ "$mode" = gpu ] && [ "$quick" = 0 ] && stage torch; then
  log "PyTorch anchor (torch_finetune_bench.py), at most 150 s"
  timeout 150 python3 "$anchors/torch_finetune_bench.py" --device cuda > "$torch_fresh" 2> "$out/torch-gpu.err" \
    || { log "PyTorch anchor failed or ran out of time:"; tail -3 "$out/torch-gpu.err" >&2; }
fi

# 4. The table.
python3 - "$bench" "$torch_fresh" "$anchors" "$out/race-best.json" "$race_s" "$card" "$mode" "$n_trials" "$per_device" "$race_precision" <<'EOF' | tee "$out/table.md"
import json, sys
from pathlib import Path
bench, fresh, anchors, best, race_s, card, mode, n_trials, per_device, precision = sys.argv[1:]
def lines(p):
    p = Path(p)
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip().startswith("{")] if p.exists() else []
ref = {}
for r in lines(Path(anchors) / "torch-gpu-h200.jsonl"):
    ref[(r["model"], r["dtype"], r["batch"], r["seq"])] = ("anchor H200", r["samples_per_s"])
for r in lines(fresh):
    ref[(r["model"], r["dtype"], r["batch"], r["seq"])] = ("same card", r["samples_per_s"])
print(f"## GPU check on {card}\n")
print("| model | precision | batch | seq | ours samples/s | ours step ms | PyTorch samples/s | ratio |")
print("|---|---|---|---|---|---|---|---|")
for r in lines(bench):
    o = r["ours"]
    k = (r["model"], r["dtype"], r["batch"], r["seq"])
    src, t = ref.get(k, ("-", None))
    ratio = f"{o['samples_per_s'] / t:.2f}x" if t else "-"
    ts = f"{t:,.0f} ({src})" if t else "-"
    print(f"| {r['model']} | {r['dtype']} | {r['batch']} | {r['seq']} | {o['samples_per_s']:,.0f} | {o['step_ms']:.1f} | {ts} | {ratio} |")
b = json.loads(Path(best).read_text())
test = b.get("test") or {}
print("\n| search | trials | wall s | best valid accuracy | test accuracy |")
print("|---|---|---|---|---|")
print("| transformers + Optuna TPE, bf16, one trial at a time (anchor, H200) | 8 | 383 | 0.9510 | 0.8968 |")
acc = test.get("accuracy")
acc = f"{acc:.4f}" if isinstance(acc, (int, float)) else "-"
val = b.get("value")
val = f"{val:.4f}" if isinstance(val, (int, float)) else "-"
print(f"| sft-search GP, {precision}, {per_device} trials per device ({mode}) | {n_trials} | {race_s} | {val} | {acc} |")
EOF
save
log "done: $out/table.md"
