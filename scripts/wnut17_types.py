#!/usr/bin/env python3
"""Derives a multi-label data set from WNUT 2017 (../shared/data/wnut17): each tweet with the set
of entity types it mentions (corporation, creative-work, group, location, person, product; none
for a tweet without entities), read from its BIO tags. It is the data of
studies/bench/wnut17-types-minilm.toml (README, *Multi-label on WNUT 2017 entity types*).

  python3 scripts/wnut17_types.py --data ../shared/data/wnut17 --out /tmp/wnut17-types

writes train.jsonl, dev.jsonl and test.jsonl there, one {"text": ..., "types": [...]} a line (the
words joined by single spaces; the types sorted), and prints each file's rows and label counts.
"""
from __future__ import annotations

import argparse
import collections
import json
import os

from wnut17_reference import read_conll  # scripts/ is on the path when this runs as a script


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/wnut17")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for split in ("train", "dev", "test"):
        counts, none, rows = collections.Counter(), 0, 0
        with open(os.path.join(args.out, f"{split}.jsonl"), "w", encoding="utf-8") as out:
            for words, tags in read_conll(os.path.join(args.data, f"{split}.conll")):
                types = sorted({t[2:] for t in tags if t[:2] in ("B-", "I-")})
                counts.update(types)
                none += not types
                rows += 1
                out.write(json.dumps({"text": " ".join(words), "types": types}, ensure_ascii=False) + "\n")
        print(f"{split}: {rows} tweets, {none} without entities, " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
