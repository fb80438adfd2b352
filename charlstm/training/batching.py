"""The training data as the loop reads it: the model's vocabulary, stateful lanes over the
memory-mapped training split, and the validation tokens, both in the model's ids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.config import TrainConfig
from ..core.errors import CharlstmError
from ..core.vocab import Vocab
from ..corpus.dataset import Dataset, load_dataset
from .finetune import merged_vocab, token_map


class LaneBatcher:
    """The training stream cut into `lanes` contiguous lanes; batch k is window k of every lane.

    Lane i covers tokens [i·L, (i+1)·L). Each batch is the next `seq_len` characters of every lane
    (targets: the same window shifted by one), so the hidden state of row i at the end of one batch
    is the right context for row i of the next. After the last full window the position wraps to
    the start of a new epoch and `next()` reports `fresh=True` so the caller resets the state.

    Under DDP, rank r reads lanes [r·lanes/world, (r+1)·lanes/world). Windows are read from the
    memory-mapped file as they are needed: the corpus is never copied into RAM.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        lanes: int,
        seq_len: int,
        rank: int = 0,
        world: int = 1,
        token_map: np.ndarray | None = None,
    ):
        n = len(tokens)
        self.token_map = token_map  # dataset id → model id, for a model whose vocabulary is wider
        self.lane_len = n // lanes
        self.seq_len = seq_len
        self.windows = (self.lane_len - 1) // seq_len  # per epoch; a target needs one character more
        if self.windows < 1:
            need = lanes * (seq_len + 1)
            raise CharlstmError(
                f"the training split has {n:,} characters; --batch-size {lanes} × (--seq-len {seq_len} + 1) "
                f"needs at least {need:,}: lower --batch-size or --seq-len, or ingest more data"
            )
        if lanes % world:
            raise CharlstmError(f"--batch-size {lanes} must be divisible by the number of processes ({world})")
        grid = tokens[: lanes * self.lane_len].reshape(lanes, self.lane_len)  # a view, nothing read
        per_rank = lanes // world
        self.grid = grid[rank * per_rank : (rank + 1) * per_rank]
        self.epoch = 0
        self.window = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(inputs [lanes, T], targets [lanes, T], fresh): fresh when an epoch starts here."""
        if self.window == self.windows:
            self.epoch, self.window = self.epoch + 1, 0
        fresh = self.window == 0
        s = self.window * self.seq_len
        chunk = np.asarray(self.grid[:, s : s + self.seq_len + 1], dtype=np.int64)
        if self.token_map is not None:
            chunk = self.token_map[chunk]
        self.window += 1
        x = torch.from_numpy(np.ascontiguousarray(chunk[:, :-1]))
        y = torch.from_numpy(np.ascontiguousarray(chunk[:, 1:]))
        return x, y, fresh

    def position(self) -> dict:
        return {"epoch": self.epoch, "window": self.window, "windows": self.windows}

    def seek(self, position: dict) -> None:
        self.epoch, self.window = int(position["epoch"]), int(position["window"])
        if not 0 <= self.window <= self.windows:
            raise CharlstmError("the checkpoint's data position does not fit this dataset")


@dataclass
class TrainingData:
    dataset: Dataset
    vocab: Vocab  # the model's: wider than the dataset's when fine-tuning
    batcher: LaneBatcher  # this process's lanes
    val_tokens: np.ndarray


def training_data(
    config: TrainConfig, rank: int, world: int, init_vocab: Vocab | None = None, resumed: dict | None = None
) -> TrainingData:
    """The dataset, the model's vocabulary (fine-tuning: the source model's characters `init_vocab`,
    then the corpus's new ones), this process's lanes and the validation tokens.

    `resumed` is the checkpoint a resumed run continues: its vocabulary must be the corpus's.
    """
    dataset = load_dataset(config.data)
    vocab = dataset.vocab
    if init_vocab is not None and resumed is None:
        vocab = merged_vocab(init_vocab, dataset.vocab)
    if resumed is not None:
        old = Vocab(resumed["vocab"])
        if config.init_from and all(s in old.index for s in vocab.symbols):
            vocab = old  # a fine-tuning run keeps its source model's characters
        elif old != vocab:
            raise CharlstmError(
                f"{config.data} has a different vocabulary ({len(vocab)} symbols) from the checkpoint's "
                f"({len(old)}); resume with the dataset the run was trained on "
                f"({resumed.get('dataset', {}).get('path')})"
            )
    ids = token_map(dataset.vocab, vocab)
    batcher = LaneBatcher(dataset.tokens("train"), config.batch_size, config.seq_len, rank, world, ids)
    val_tokens = dataset.tokens("val")
    if config.patience is not None and len(val_tokens) < 2:
        raise CharlstmError(
            f"--patience counts validations, but {config.data} has no validation split to score "
            f"(ingest more than one file, or drop --patience)"
        )
    if ids is not None:
        val_tokens = ids[np.asarray(val_tokens, dtype=np.int64)]
    return TrainingData(dataset, vocab, batcher, val_tokens)
