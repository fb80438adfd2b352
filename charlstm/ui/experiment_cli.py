"""`charlstm experiment`: its options, and the call they make."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .guard import err, user_errors

Name = Annotated[
    str, typer.Argument(help="counter | selective-counter | state | copy | all (the four, then one table).")
]

Seed = Annotated[int, typer.Option(help="Seed for data, initial weights and evaluation prompts.")]

Steps = Annotated[int | None, typer.Option(help="Training steps (default: each study's own, about a minute in all).")]

MaxN = Annotated[
    int | None,
    typer.Option(
        help=(
            "Largest N (or length) in the training data, up to 1000; copy needs 2 or more (default 10, as the article)."
        )
    ),
]

EvalMaxN = Annotated[
    int | None,
    typer.Option(
        help=(
            "Judge every N from 1 to this, up to 1000, and at least --max-n (default: each study's own, past training)."
        )
    ),
]

OutDir = Annotated[Path, typer.Option(help="Runs are kept in OUT_DIR/experiment-NAME/ (best.pt and results.json).")]

JsonOut = Annotated[
    bool, typer.Option("--json", help="Print the results as one JSON object on stdout (for all: keyed by study).")
]

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or per-study report.")]

Html = Annotated[
    Path | None,
    typer.Option(help="Also write the HTML explorer of the run, opened on the unit found (all: OUT-STUDY.html)."),
]

Device = Annotated[
    str,
    typer.Option(
        help="auto (a CUDA GPU when present, else the CPU), cuda or cpu: where the studies train and are judged."
    ),
]


@user_errors
def experiment_command(
    name: Name,
    seed: Seed = 0,
    steps: Steps = None,
    max_n: MaxN = None,
    eval_max_n: EvalMaxN = None,
    out_dir: OutDir = Path("checkpoints"),
    json_out: JsonOut = False,
    quiet: Quiet = False,
    html: Html = None,
    device: Device = "auto",
) -> None:
    """Reproduce the source article's small studies: train a tiny LSTM on a synthetic language,
    judge its greedy generations, and show the units that solve it (layers numbered from 1)."""
    from .experiment_command import run_experiments, strip_views

    results = run_experiments(
        name,
        err,
        quiet=quiet,
        html=html,
        seed=seed,
        out_dir=out_dir,
        steps=steps,
        max_n=max_n,
        eval_max_n=eval_max_n,
        device=device,
    )
    if json_out:
        payload = {k: strip_views(v) for k, v in results.items()} if name == "all" else strip_views(results[name])
        typer.echo(json.dumps(payload))
