"""A toy training script for a `command` objective: reads its parameters as JSON on stdin,
reports a validation loss per epoch as JSON lines, then the final value.
Replace the body with your own training code; keep the printed lines."""
import json
import math
import sys
import time

p = json.load(sys.stdin)
lr, epochs = p["learning_rate"], p["epochs"]
loss = 1.0
for epoch in range(1, epochs + 1):
    time.sleep(0.05)  # "training"
    loss = 0.3 + 0.3 * (math.log10(lr) + 4) ** 2 + 0.5 * math.exp(-epoch)
    print(json.dumps({"step": epoch, "value": loss, "metrics": {"train_loss": loss * 0.9}}), flush=True)
print(json.dumps({"value": loss}))
