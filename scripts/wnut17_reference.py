#!/usr/bin/env python3
"""Reference for token classification: one fine-tuning run of transformers' Trainer on WNUT 2017,
the protocol of studies/bench/wnut17-minilm.toml, to set beside one sft-search trial with the same
setting (README, *Named entities on WNUT 2017*).

  * ../shared/data/wnut17: train.conll to train, dev.conll to choose the epoch, test.conll once.
  * AutoModelForTokenClassification (BertForTokenClassification: encoder, dropout, new linear),
    words tokenized with is_split_into_words=True, truncation at max_length 128, each word's tag
    on its first token and -100 elsewhere (the transformers token-classification example),
    DataCollatorForTokenClassification (dynamic padding), torch threads 2.
  * AdamW, linear schedule with 10 % warm-up, weight decay 0.01, seed 42; the epoch with the best
    dev entity F1 (seqeval) is kept and scored once on test.

  python3 scripts/wnut17_reference.py --model /path/to/minilm --lr 5e-5 --batch-size 16 --epochs 3

  Needs torch, transformers (with accelerate) and seqeval. The result is the last line of stdout (JSON).
"""
from __future__ import annotations

import argparse
import math
import json
import time


def read_conll(path):
    sents, words, tags = [], [], []
    for line in open(path, encoding="utf-8"):
        f = line.split()
        if not f or f[0] == "-DOCSTART-":
            if words:
                sents.append((words, tags))
                words, tags = [], []
            continue
        words.append(f[0])
        tags.append(f[-1])
    if words:
        sents.append((words, tags))
    return sents


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", default="../shared/data/wnut17")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out-dir", default="/tmp/wnut17-reference")
    args = p.parse_args()

    import torch
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
    from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification, Trainer,
                              TrainingArguments, set_seed)

    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    train, dev, test = (read_conll(f"{args.data}/{s}.conll") for s in ("train", "dev", "test"))
    names = sorted({t for _, ts in train for t in ts} - {"O"})
    names = ["O"] + names
    label2id = {n: i for i, n in enumerate(names)}
    tok = AutoTokenizer.from_pretrained(args.model)

    def encode(sents):
        enc = tok([w for w, _ in sents], is_split_into_words=True, truncation=True, max_length=args.max_length)
        rows = []
        for i, (_, tags) in enumerate(sents):
            labels, prev = [], None
            for w in enc.word_ids(i):
                labels.append(-100 if w is None or w == prev else label2id[tags[w]])
                prev = w
            rows.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                         "token_type_ids": enc["token_type_ids"][i], "labels": labels})
        return rows

    tr, dv, te = encode(train), encode(dev), encode(test)
    model = AutoModelForTokenClassification.from_pretrained(
        args.model, num_labels=len(names), id2label=dict(enumerate(names)), label2id=label2id)

    def metrics(pred):
        logits, labels = pred
        preds = logits.argmax(-1)
        g, q = [], []
        for p_row, l_row in zip(preds, labels):
            keep = l_row != -100
            g.append([names[x] for x in l_row[keep]])
            q.append([names[x] for x in p_row[keep]])
        return {"f1": f1_score(g, q), "precision": precision_score(g, q), "recall": recall_score(g, q),
                "accuracy": accuracy_score(g, q)}

    targs = TrainingArguments(
        output_dir=args.out_dir, learning_rate=args.lr, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64, num_train_epochs=args.epochs, weight_decay=args.weight_decay,
        warmup_steps=math.ceil(args.warmup_ratio * args.epochs * math.ceil(len(tr) / args.batch_size)),
        lr_scheduler_type="linear", eval_strategy="epoch", save_strategy="epoch",
        load_best_model_at_end=True, metric_for_best_model="f1", greater_is_better=True, save_total_limit=1,
        seed=args.seed, report_to=[], logging_strategy="epoch", use_cpu=True, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=targs, train_dataset=tr, eval_dataset=dv,
                      data_collator=DataCollatorForTokenClassification(tok), compute_metrics=metrics)
    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    dev_m = trainer.evaluate(dv)
    test_m = trainer.evaluate(te, metric_key_prefix="test")
    per_epoch = [{k: v for k, v in h.items() if k in ("epoch", "eval_f1", "eval_loss", "loss")} for h in trainer.state.log_history]
    print(json.dumps({"setting": {"lr": args.lr, "batch_size": args.batch_size, "epochs": args.epochs},
                      "train_s": round(train_s, 1), "dev": dev_m, "test": test_m, "history": per_epoch,
                      "torch": torch.__version__, "tags": names}))  # the last line of stdout


if __name__ == "__main__":
    main()
