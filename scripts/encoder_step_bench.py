"""PyTorch reference for `sft-search bench train` on encoder families other than the anchor's MiniLM.

The same step as ../shared/anchors/torch_cpu_step_bench.py (base model + mean pooling + linear
head, cross-entropy, AdamW lr 5e-5 body / 1e-3 head, weight decay 0.01, dropout on, batch
padded to the full length, 2 warm-up + STEPS timed steps), loaded with AutoModel so any family
works, on random token ids (no tokenizer needed).

  python3 scripts/encoder_step_bench.py make DIR   # DIR/distilbert-base, DIR/roberta-base,
                                                   # DIR/electra-small: random weights in the
                                                   # published shapes (no download)
  MODEL_DIR=DIR/roberta-base THREADS=2 SEQ=64 BATCH=16 STEPS=10 python3 scripts/encoder_step_bench.py
"""
import os, sys, time
import torch
from transformers import AutoModel

if len(sys.argv) == 3 and sys.argv[1] == "make":
    from transformers import DistilBertConfig, DistilBertModel, ElectraConfig, ElectraModel, RobertaConfig, RobertaModel
    torch.manual_seed(0)
    DistilBertModel(DistilBertConfig()).save_pretrained(os.path.join(sys.argv[2], "distilbert-base"))
    roberta = RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5)
    RobertaModel(roberta, add_pooling_layer=False).save_pretrained(os.path.join(sys.argv[2], "roberta-base"))
    ElectraModel(ElectraConfig()).save_pretrained(os.path.join(sys.argv[2], "electra-small"))  # the defaults are ELECTRA-small
    sys.exit(0)

threads = int(os.environ.get("THREADS", "2")); torch.set_num_threads(threads)
seq = int(os.environ.get("SEQ", "64")); batch = int(os.environ.get("BATCH", "16")); steps = int(os.environ.get("STEPS", "10"))
d = os.environ.get("MODEL_DIR") or sys.exit("set MODEL_DIR to a Hugging Face model folder")
model = AutoModel.from_pretrained(d)
head = torch.nn.Linear(model.config.hidden_size, 2)
opt = torch.optim.AdamW([{"params": model.parameters(), "lr": 5e-5}, {"params": head.parameters(), "lr": 1e-3}], weight_decay=0.01)
g = torch.Generator().manual_seed(42)
enc = {"input_ids": torch.randint(3, model.config.vocab_size, (batch, seq), generator=g),
       "attention_mask": torch.ones(batch, seq, dtype=torch.long)}
y = torch.tensor([i % 2 for i in range(batch)])
model.train(); head.train()

def step():
    t = time.perf_counter()
    hs = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    loss = torch.nn.functional.cross_entropy(head((hs * m).sum(1) / m.sum(1)), y)
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    t2 = time.perf_counter()
    opt.step()
    t3 = time.perf_counter()
    return t1 - t, t2 - t1, t3 - t2

acc = [0.0, 0.0, 0.0]
for i in range(2 + steps):
    times = step()
    if i >= 2:
        acc = [a + b for a, b in zip(acc, times)]
tot = sum(acc) / steps
print(f"RESULT torch {model.config.model_type} seq={seq} batch={batch} threads={threads}: fwd {acc[0]/steps*1e3:.1f}ms "
      f"bwd {acc[1]/steps*1e3:.1f}ms opt {acc[2]/steps*1e3:.1f}ms step {tot*1e3:.1f}ms => {batch/tot:.2f} samples/s")
