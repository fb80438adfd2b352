"""Copy a trained run into a shipped model folder (checkpoints/pretrained-python/ by default): best.pt
without the optimizer and resume state, plus the run's config.json and metrics.jsonl, and the first
20,000 characters of its validation split (val-excerpt.txt) so that inspection works without the
dataset. `--fp16` stores the weights in float16, half the size (sampling and inspection load them
back into float32).

    python scripts/ship_model.py checkpoints/python-stdlib-3x256
    python scripts/ship_model.py checkpoints/jdk-3x512 --to checkpoints/pretrained-java --fp16
"""

import argparse
from pathlib import Path

import numpy as np

from charlstm.core.checkpoint import BEST, PRETRAINED_RUN, VAL_EXCERPT, export_for_inference
from charlstm.core.files import atomic_write
from charlstm.corpus.dataset import load_dataset

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("run", type=Path, help="the run folder to ship")
parser.add_argument("--to", type=Path, default=PRETRAINED_RUN, help="the shipped folder (default: %(default)s)")
parser.add_argument("--fp16", action="store_true", help="store the weights in float16")
args = parser.parse_args()
run, to = args.run, args.to
to.mkdir(parents=True, exist_ok=True)
slim = export_for_inference(run / BEST, to / BEST, half=args.fp16)
for name in ("config.json", "metrics.jsonl"):
    data = (run / name).read_bytes()
    atomic_write(to / name, lambda f, data=data: f.write(data))
dataset = load_dataset(slim["dataset"]["path"])
excerpt = dataset.vocab.decode(np.asarray(dataset.tokens("val")[:20_000]).tolist())
atomic_write(to / VAL_EXCERPT, lambda f: f.write(excerpt.encode("utf-8")))
size = (to / BEST).stat().st_size / 1e6
print(f"{to / BEST}: step {slim.get('step')}, val bpc {slim.get('best_val_bpc')}, {size:.1f} MB")
