"""Bits per character: how well a model predicts a text.

One function, `bits_per_char`, scores a token stream the way training reads it: the stream is cut
into contiguous lanes and the hidden state carries from window to window, so every character is
predicted with everything before it in its lane as context. Training's validation and
`charlstm eval` both call it with the same lane layout, so their numbers agree.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.backend import Precision, checkpoint_precision, flush_denormals
from ..core.checkpoint import OpenedModel, open_model
from ..core.errors import CharlstmError, shown_path
from ..core.model import LN2
from ..core.userio import read_text_source
from ..corpus.dataset import load_dataset, locate_recorded_dataset

EVAL_SEQ_LEN = 256  # characters per forward pass; the state carries, so this sets speed, not the score
MAX_LANES = 64  # lanes scored side by side (a batch)
MIN_LANE_CHARS = 2048  # short texts get fewer lanes, so each lane keeps a long context
IGNORE = -100  # target id that padding carries; cross_entropy skips it


def lane_count(n_predictions: int, max_lanes: int = MAX_LANES) -> int:
    """How many lanes a text of `n_predictions` scored characters is cut into (a pure function of length)."""
    return max(1, min(max_lanes, n_predictions // MIN_LANE_CHARS))


@torch.no_grad()
def bits_per_char(
    model: torch.nn.Module,
    tokens,
    *,
    device: torch.device | str = "cpu",
    autocast=nullcontext,
    remap: np.ndarray | None = None,
    seq_len: int = EVAL_SEQ_LEN,
    max_lanes: int = MAX_LANES,
) -> dict:
    """Score `tokens` (a 1-D array or memmap of ids): every token after the first is predicted.

    `remap` translates ids of another vocabulary into the model's. Returns bpc, loss (nats per
    character) and chars (how many characters were scored). Windows are read from `tokens` one at a
    time, so a memory-mapped split is never loaded whole.
    """
    n_pred = len(tokens) - 1
    if n_pred < 1:
        raise CharlstmError("nothing to score: the text needs at least two characters")
    lanes = lane_count(n_pred, max_lanes)
    lane_len = math.ceil(n_pred / lanes)
    starts = [i * lane_len for i in range(lanes)]
    ends = [min((i + 1) * lane_len, n_pred) for i in range(lanes)]
    was_training = model.training
    model.eval()
    state = None
    total = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for window in range(math.ceil(lane_len / seq_len)):
            x = np.zeros((lanes, seq_len), dtype=np.int64)
            y = np.full((lanes, seq_len), IGNORE, dtype=np.int64)
            for i in range(lanes):
                s = starts[i] + window * seq_len
                e = min(s + seq_len, ends[i])
                if e > s:
                    chunk = np.asarray(tokens[s : e + 1], dtype=np.int64)
                    if remap is not None:
                        chunk = remap[chunk]
                    x[i, : e - s] = chunk[:-1]
                    y[i, : e - s] = chunk[1:]
            xt = torch.from_numpy(x).to(device, non_blocking=True)
            yt = torch.from_numpy(y).to(device, non_blocking=True)
            with autocast():
                logits, state = model(xt, state)
            # Padding sits after the real characters of a lane, so it never changes their scores.
            total += F.cross_entropy(
                logits.float().reshape(-1, logits.size(-1)), yt.reshape(-1), ignore_index=IGNORE, reduction="sum"
            )
    finally:
        model.train(was_training)
    loss = total.item() / n_pred
    return {"bpc": loss / LN2, "loss": loss, "chars": n_pred}


def load_for_scoring(
    checkpoint: str | Path | None, device: str, precision: str | None
) -> tuple[OpenedModel, Precision]:
    """A checkpoint's model on `device`, and the precision it is scored in (`precision` None: the
    one the run trained with, where it runs here)."""
    opened = open_model(checkpoint, device)
    flush_denormals(opened.device)
    prec = checkpoint_precision(precision, opened.payload.get("precision"), opened.device, opened.model.config.kind)
    return opened, prec


def evaluate_checkpoint(
    checkpoint: str | Path | None,
    data: str | Path | None = None,
    text_file: str | Path | None = None,
    device: str = "auto",
    precision: str | None = None,
    dynamic: bool = False,
    dynamic_lr: float | None = None,
) -> dict:
    """`charlstm eval`: bits per character of a checkpoint on a dataset's val split or on a text file.

    With neither `data` nor `text_file`, the dataset the checkpoint was trained on is used. A text
    file is scored as a document of its own: a document separator comes first, so every one of its
    characters is predicted. Characters the model does not know are scored as the unknown symbol
    and listed under `unknown_chars`. `precision` None: the one the run was trained with.
    `dynamic` adds `dynamic`: the same text scored under dynamic evaluation (see dynamic_eval.py).
    """
    if data is not None and text_file is not None:
        raise CharlstmError("give --data or --text-file, not both")
    if dynamic_lr is not None and not dynamic:
        raise CharlstmError("--dynamic-lr needs --dynamic")
    opened, prec = load_for_scoring(checkpoint, device, precision)
    path, payload, model, vocab, dev = opened.path, opened.payload, opened.model, opened.vocab, opened.device

    unknown: list[str] = []
    remap = None
    if text_file is not None:
        text = read_text_source(text_file)
        unknown = vocab.unknown_chars(text)
        tokens = np.concatenate([[vocab.doc_sep], vocab.encode(text)])
        source = str(text_file)
    else:
        if data is None:
            data = (payload.get("dataset") or {}).get("path")
            if not data:
                raise CharlstmError(
                    f"{shown_path(path)} does not record its dataset; pass --data data/NAME or --text-file FILE"
                )
            data = locate_recorded_dataset(data, path)
        dataset = load_dataset(data)
        tokens = dataset.tokens("val")
        if len(tokens) < 2:
            raise CharlstmError(f"{shown_path(data)} has no validation split to score")
        if dataset.vocab != vocab:
            # Another corpus: translate its symbols into the model's, unknown ones to UNK.
            unknown = [s for s in dataset.vocab.symbols if s not in vocab.index]
            remap = np.array([vocab.index.get(s, vocab.unk) for s in dataset.vocab.symbols], dtype=np.int64)
        source = f"{data} (val)"

    start = time.perf_counter()
    result = bits_per_char(model, tokens, device=dev, autocast=prec.autocast, remap=remap)
    seconds = time.perf_counter() - start
    extra = {}
    if dynamic:
        from .dynamic_eval import DYNAMIC_LR, dynamic_bits_per_char

        started = time.perf_counter()
        adapted = dynamic_bits_per_char(
            model,
            tokens,
            device=dev,
            autocast=prec.autocast,
            remap=remap,
            lr=DYNAMIC_LR if dynamic_lr is None else dynamic_lr,
        )
        extra["dynamic"] = {**adapted, "seconds": round(time.perf_counter() - started, 3)}
    return {
        **result,
        **extra,
        "source": source,
        "checkpoint": str(path),
        "step": payload.get("step"),
        "unknown_chars": unknown,
        "precision": prec.name,
        "device": str(dev),
        "seconds": round(seconds, 3),
        "chars_per_sec": round(result["chars"] / max(seconds, 1e-9), 1),
    }
