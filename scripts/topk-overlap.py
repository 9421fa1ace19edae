#!/usr/bin/env python3
"""Top-K overlap of a model's correlators with a reference model's.

    scripts/topk-overlap.py MODEL_DIR REFERENCE_DIR [FIELD ...]

For every item of the reference and every correlator field (default: every
list field except those of both models' properties), the overlap is
|A ∩ B| / |B| with B the reference's list (an empty reference list counts as
1 when A is empty too, else 0). Prints the mean overlap per field, the
share of lists identical in content and order, and the worst items.
"""
import json
import sys
from pathlib import Path


def load(model):
    docs = {}
    with open(Path(model) / "items.jsonl") as f:
        for line in f:
            d = json.loads(line)
            docs[d["id"]] = d
    return docs


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    model, reference = load(sys.argv[1]), load(sys.argv[2])
    fields = sys.argv[3:]
    if not fields:
        manifest = json.load(open(Path(sys.argv[2]) / "manifest.json"))
        fields = list(manifest["model"]["correlators"].keys())
    missing = set(reference) - set(model)
    extra = set(model) - set(reference)
    print(f"documents: {len(model)} (reference {len(reference)}; missing {len(missing)}, extra {len(extra)})")
    for field in fields:
        total, identical, n, worst = 0.0, 0, 0, []
        for item, ref in reference.items():
            b = ref.get(field, [])
            a = model.get(item, {}).get(field, [])
            if not a and not b:
                continue
            n += 1
            o = len(set(a) & set(b)) / len(b) if b else 0.0
            total += o
            identical += a == b
            worst.append((o, item))
        worst.sort()
        mean = total / n if n else 1.0
        print(f"{field}: {n} lists, mean top-K overlap {mean:.4f}, identical {identical / max(n, 1):.4f}, "
              f"worst {', '.join(f'{i} {o:.2f}' for o, i in worst[:3])}")


main()
