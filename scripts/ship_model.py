"""Copy a trained run into checkpoints/pretrained-python/ for the repository: best.pt without the
optimizer and resume state, plus the run's config.json and metrics.jsonl, and the first 20,000
characters of its validation split (val-excerpt.txt) so that inspection works without the dataset.

    python scripts/ship_model.py checkpoints/python-stdlib-3x256
"""

import shutil
import sys
from pathlib import Path

import numpy as np

from charlstm.checkpoint import BEST, PRETRAINED_RUN, VAL_EXCERPT, export_for_inference
from charlstm.dataset import load_dataset

run = Path(sys.argv[1])
PRETRAINED_RUN.mkdir(parents=True, exist_ok=True)
slim = export_for_inference(run / BEST, PRETRAINED_RUN / BEST)
for name in ("config.json", "metrics.jsonl"):
    shutil.copy(run / name, PRETRAINED_RUN / name)
dataset = load_dataset(slim["dataset"]["path"])
excerpt = dataset.vocab.decode(np.asarray(dataset.tokens("val")[:20_000]).tolist())
(PRETRAINED_RUN / VAL_EXCERPT).write_text(excerpt, encoding="utf-8")
size = (PRETRAINED_RUN / BEST).stat().st_size / 1e6
print(f"{PRETRAINED_RUN / BEST}: step {slim.get('step')}, val bpc {slim.get('best_val_bpc')}, {size:.1f} MB")
