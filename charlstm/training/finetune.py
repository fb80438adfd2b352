"""Fine-tuning: start a run from a trained model on a new corpus without scrambling its characters.

char-rnn and torch-rnn users who fine-tuned got garbled output because a new corpus re-numbered the
characters (torch-rnn #147). Here the fine-tuned model's vocabulary is the source model's, in its
order, followed by the characters only the new corpus has; the corpus's token ids are translated
into that vocabulary as batches are read. So:

- characters both know keep their exact rows (embedding, output weights and bias);
- characters new to the model get fresh embedding rows and output rows that start improbable
  (zero weights, a bias below the source model's least likely character), so they cost the model
  nothing until the corpus teaches them;
- characters the new corpus lacks keep their rows, and the model can still write them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.checkpoint import BEST, LATEST, PRETRAINED_RUN, load_checkpoint, resolve_checkpoint
from ..core.errors import CharlstmError, refuse_empty, shown_path
from ..core.model import ModelConfig
from ..core.vocab import Vocab

# Options that fix the network's shape: a fine-tuning run takes them from its source model.
SHAPE_OPTIONS = ("model", "layers", "hidden", "embed")
# Defaults that suit a model that already knows code: a gentler peak than training from scratch
# (3e-3) so the first steps refine rather than overwrite, and a longer warm-up for AdamW's moment
# estimates to settle before the peak.
FINETUNE_LR = 1e-3
FINETUNE_WARMUP_STEPS = 50
# How far below the source model's least likely character a new character's output bias starts,
# in nats: e^-4 ≈ 2% of that character's probability.
NEW_SYMBOL_BIAS_MARGIN = 4.0
# Models that ship with charlstm, by the name --init-from accepts.
SHIPPED = {PRETRAINED_RUN.name: PRETRAINED_RUN}


@dataclass
class InitSource:
    """The trained model a fine-tuning run starts from."""

    checkpoint: Path
    model_config: ModelConfig
    vocab: Vocab
    weights: dict[str, torch.Tensor]
    step: int
    dataset: str | None

    def record(self) -> dict:
        """What the run's config records about where it started."""
        return {
            "checkpoint": str(self.checkpoint.resolve()),
            "step": self.step,
            "dataset": self.dataset,
            "vocab_size": len(self.vocab),
        }


def resolve_init_source(name_or_path: str) -> Path:
    """A checkpoint file from a file, a run folder, or the name of a shipped model."""
    refuse_empty(
        name_or_path, "--init-from", f"a shipped model ({', '.join(SHIPPED)}), a run folder or a checkpoint file"
    )
    path = Path(name_or_path)
    if not path.exists() and name_or_path in SHIPPED:
        path = SHIPPED[name_or_path]
    elif name_or_path in SHIPPED and path.is_dir() and not any((path / f).is_file() for f in (BEST, LATEST)):
        raise CharlstmError(
            f"--init-from {shown_path(name_or_path)}: the folder {shown_path(path)} here holds no checkpoint "
            "and hides the "
            f"shipped model of that name; give its path instead: {SHIPPED[name_or_path]}"
        )
    if not path.exists():
        names = ", ".join(SHIPPED)
        raise CharlstmError(
            f"--init-from {shown_path(name_or_path)}: no such checkpoint or run folder (shipped models: {names})"
        )
    return resolve_checkpoint(path)


def load_init_source(name_or_path: str) -> InitSource:
    checkpoint = resolve_init_source(name_or_path)
    payload = load_checkpoint(checkpoint)
    try:
        config = ModelConfig(**payload["model_config"])
        vocab = Vocab(payload["vocab"])
        weights = payload["model"]
    except (KeyError, TypeError) as exc:
        raise CharlstmError(f"--init-from {checkpoint}: not a model checkpoint ({exc})") from None
    return InitSource(
        checkpoint, config, vocab, weights, int(payload.get("step", 0)), (payload.get("dataset") or {}).get("name")
    )


def check_shape_options(given: dict, source: InitSource) -> None:
    """The user may leave the shape out (it comes from the source) but not ask for another one."""
    wanted = {
        "model": source.model_config.kind,
        "layers": source.model_config.layers,
        "hidden": source.model_config.hidden,
        "embed": source.model_config.embed,
    }
    for key in SHAPE_OPTIONS:
        if key in given and given[key] != wanted[key]:
            raise CharlstmError(
                f"--{key} {given[key]} differs from the model being fine-tuned ({source.checkpoint}: --{key} "
                f"{wanted[key]}); leave the shape options out when using --init-from"
            )


def merged_vocab(model_vocab: Vocab, data_vocab: Vocab) -> Vocab:
    """The model's symbols in their order, then the corpus's symbols the model lacks."""
    new = [s for s in data_vocab.symbols if s not in model_vocab.index]
    return Vocab([*model_vocab.symbols, *new])


def token_map(data_vocab: Vocab, model_vocab: Vocab) -> np.ndarray | None:
    """dataset id → model id, or None when the two vocabularies are the same."""
    if data_vocab == model_vocab:
        return None
    missing = [s for s in data_vocab.symbols if s not in model_vocab.index]
    if missing:
        raise CharlstmError(
            f"the run's vocabulary lacks {len(missing)} of the dataset's characters: {''.join(missing[:20])!r}"
        )
    return np.array([model_vocab.index[s] for s in data_vocab.symbols], dtype=np.int64)


def transfer_weights(source: InitSource, vocab: Vocab, seed: int) -> dict[str, torch.Tensor]:
    """The source's weights for a model whose vocabulary is `vocab` (a superset of the source's)."""
    old = source.weights
    n_old, n_new = len(source.vocab), len(vocab)
    if vocab.symbols[:n_old] != source.vocab.symbols:
        raise CharlstmError("internal: the fine-tuning vocabulary must extend the source model's")
    state = dict(old)
    extra = n_new - n_old
    if extra == 0:
        return state
    generator = torch.Generator().manual_seed(seed)
    emb = old["embedding.weight"]
    # New characters' embeddings: random rows at the scale of the trained ones.
    fresh = torch.randn(extra, emb.shape[1], generator=generator, dtype=torch.float32) * emb.float().std()
    state["embedding.weight"] = torch.cat([emb, fresh.to(emb.dtype)])
    head_w, head_b = old["head.weight"], old["head.bias"]
    state["head.weight"] = torch.cat([head_w, torch.zeros(extra, head_w.shape[1], dtype=head_w.dtype)])
    floor = head_b.min() - NEW_SYMBOL_BIAS_MARGIN
    state["head.bias"] = torch.cat([head_b, torch.full((extra,), float(floor), dtype=head_b.dtype)])
    return state
