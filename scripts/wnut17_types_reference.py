#!/usr/bin/env python3
"""Reference for multi-label classification: one fine-tuning run of transformers' Trainer on the
WNUT 2017 entity types (scripts/wnut17_types.py), the protocol of
studies/bench/wnut17-types-minilm.toml, to set beside one sft-search trial with the same setting
(README, *Multi-label on WNUT 2017 entity types*).

  * train.jsonl to train, dev.jsonl to choose the epoch, test.jsonl once.
  * AutoModelForSequenceClassification with problem_type="multi_label_classification" (the
    pooler, dropout and a new linear layer, one sigmoid per type, BCEWithLogitsLoss), truncation
    at max_length 128, dynamic padding, torch threads 2.
  * AdamW, linear schedule with 10 % warm-up, weight decay 0.01, seed 42; the epoch with the best
    dev micro F1 (a type is predicted at probability >= 0.5; scikit-learn) is kept and scored
    once on test.
  * --tune-threshold: what `threshold = "tuned"` does, in Python: every dev evaluation scores at
    the threshold of 0.05, 0.06, ..., 0.95 with the best dev micro F1 (the nearest to 0.5 among
    equals), so the epoch is chosen on that; test is scored at the kept epoch's threshold.

  python3 scripts/wnut17_types.py --data ../shared/data/wnut17 --out /tmp/wnut17-types
  python3 scripts/wnut17_types_reference.py --model /path/to/minilm --data /tmp/wnut17-types

  Needs torch, transformers (with accelerate) and scikit-learn. The result is the last line of
  stdout (JSON).
"""
from __future__ import annotations

import argparse
import json
import math
import time


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", default="/tmp/wnut17-types")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out-dir", default="/tmp/wnut17-types-reference")
    p.add_argument("--tune-threshold", action="store_true")
    args = p.parse_args()

    import numpy as np
    import torch
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss, roc_auc_score
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)

    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    splits = {s: [json.loads(l) for l in open(f"{args.data}/{s}.jsonl", encoding="utf-8")] for s in ("train", "dev", "test")}
    names = sorted({t for r in splits["train"] for t in r["types"]})
    tok = AutoTokenizer.from_pretrained(args.model)

    def encode(rows):
        enc = tok([r["text"] for r in rows], truncation=True, max_length=args.max_length)
        return [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                 "token_type_ids": enc["token_type_ids"][i], "labels": [float(n in r["types"]) for n in names]}
                for i, r in enumerate(rows)]

    tr, dv, te = (encode(splits[s]) for s in ("train", "dev", "test"))
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=len(names), problem_type="multi_label_classification",
        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})

    grid = [i / 100 for i in range(5, 96)]
    chosen = {"threshold": 0.5}  # the threshold of the last dev evaluation

    def metrics(pred, threshold=None):
        logits, labels = pred
        probs = 1 / (1 + np.exp(-logits))
        y = labels.astype(int)
        if threshold is None:
            threshold = 0.5
            if args.tune_threshold:
                f1s = [(f1_score(y, (probs >= t).astype(int), average="micro", zero_division=0), -abs(t - 0.5), t) for t in grid]
                threshold = max(f1s)[2]
            chosen["threshold"] = threshold
        hat = (probs >= threshold).astype(int)
        return {"threshold": threshold, "f1_micro": f1_score(y, hat, average="micro", zero_division=0),
                "f1_macro": f1_score(y, hat, average="macro", zero_division=0),
                "accuracy": accuracy_score(y, hat), "hamming_loss": hamming_loss(y, hat),
                "roc_auc": roc_auc_score(y, probs, average="macro")}

    targs = TrainingArguments(
        output_dir=args.out_dir, learning_rate=args.lr, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64, num_train_epochs=args.epochs, weight_decay=args.weight_decay,
        warmup_steps=math.ceil(args.warmup_ratio * args.epochs * math.ceil(len(tr) / args.batch_size)),
        lr_scheduler_type="linear", eval_strategy="epoch", save_strategy="epoch",
        load_best_model_at_end=True, metric_for_best_model="f1_micro", greater_is_better=True, save_total_limit=1,
        seed=args.seed, report_to=[], logging_strategy="epoch", use_cpu=True, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=targs, train_dataset=tr, eval_dataset=dv,
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=metrics)
    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    dev_m = trainer.evaluate(dv)  # the kept epoch's weights: sets its threshold
    trainer.compute_metrics = None  # test never chooses a threshold: score it at dev's below
    out = trainer.predict(te, metric_key_prefix="test")
    test_m = {"test_" + k: v for k, v in metrics((out.predictions, out.label_ids), threshold=chosen["threshold"]).items()}
    test_m["test_loss"] = out.metrics["test_loss"]
    per_epoch = [{k: v for k, v in h.items() if k in ("epoch", "eval_f1_micro", "eval_threshold", "eval_loss", "loss")} for h in trainer.state.log_history]
    print(json.dumps({"setting": {"lr": args.lr, "batch_size": args.batch_size, "epochs": args.epochs},
                      "train_s": round(train_s, 1), "dev": dev_m, "test": test_m, "history": per_epoch,
                      "torch": torch.__version__, "types": names}))  # the last line of stdout


if __name__ == "__main__":
    main()
