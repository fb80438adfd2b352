"""`charlstm ingest`: its options, and the library call they make."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..core.config import Preset
from ..core.errors import one_line_text
from .guard import err, user_errors

Sources = Annotated[
    list[str] | None,
    typer.Argument(
        help="Folders, single files, .zip/.tar/.tar.gz archives or git URLs; several make one dataset. "
        "None: the running Python's standard library (--preset python-stdlib).",
        show_default=False,
    ),
]

Name = Annotated[
    str | None,
    typer.Option(
        "--name",
        "-n",
        help="Dataset name: it is written to DATA_DIR/NAME/. Default: the preset's name.",
        rich_help_panel="Output",
    ),
]

DataDir = Annotated[Path, typer.Option("--data-dir", help="Folder holding datasets.", rich_help_panel="Output")]

Force = Annotated[
    bool, typer.Option("--force", help="Replace an existing dataset of that name.", rich_help_panel="Output")
]

JsonOut = Annotated[
    bool,
    typer.Option(
        "--json", help="Print the summary as one JSON object on stdout instead of a table.", rich_help_panel="Output"
    ),
]

PresetChoice = Annotated[
    Preset | None,
    typer.Option(
        "--preset",
        help=(
            "python-stdlib: this Python's standard library without its tests (.py). jdk: an installed JDK's src.zip "
            "(.java)."
        ),
        rich_help_panel="Sources",
        show_default=False,
    ),
]

Ext = Annotated[
    list[str] | None,
    typer.Option(
        "--ext",
        help=(
            "Keep files with this extension (repeatable or comma-separated; .java or java). Default: the preset's, "
            "else common source-code extensions."
        ),
        rich_help_panel="Filtering",
        show_default=False,
    ),
]

MaxFileBytes = Annotated[
    int,
    typer.Option(
        "--max-file-bytes",
        help="Skip files larger than this (generated code, data tables).",
        rich_help_panel="Filtering",
    ),
]

MinCharCount = Annotated[
    int,
    typer.Option(
        "--min-char-count",
        help="Characters seen fewer times map to the unknown symbol. 1 keeps every character (lossless).",
        rich_help_panel="Vocabulary and split",
    ),
]

ValFraction = Annotated[
    float,
    typer.Option(
        "--val-fraction",
        help="Share of characters held out for validation, as whole files.",
        rich_help_panel="Vocabulary and split",
    ),
]

Seed = Annotated[
    int, typer.Option("--seed", help="Chooses which files go to validation.", rich_help_panel="Vocabulary and split")
]


@user_errors
def ingest_command(
    sources: Sources = None,
    name: Name = None,
    data_dir: DataDir = Path("data"),
    force: Force = False,
    json_out: JsonOut = False,
    preset: PresetChoice = None,
    ext: Ext = None,
    max_file_bytes: MaxFileBytes = 1_000_000,
    min_char_count: MinCharCount = 1,
    val_fraction: ValFraction = 0.05,
    seed: Seed = 0,
) -> None:
    """Turn source code into a dataset: DATA_DIR/NAME/ with train.bin, val.bin and meta.json.

    Binary, empty, duplicate, oversized and non-UTF-8 files are skipped and counted by reason, as are
    VCS, vendored and build folders; files are split into train and validation whole.
    """
    from ..corpus.ingest import ingest
    from .render import ingest_table
    from .terminal import Terminal

    with Terminal(leave=False) as show:  # the reading's progress bar on stderr, and only on a terminal
        report = ingest(
            sources,
            name,
            preset=preset.value if preset is not None else None,
            extensions=ext,
            data_dir=data_dir,
            max_file_bytes=max_file_bytes,
            min_char_count=min_char_count,
            val_fraction=val_fraction,
            seed=seed,
            force=force,
            on_event=show,
        )
    for warning in report["warnings"]:
        err.print(f"[yellow]warning:[/yellow] {escape(one_line_text(warning))}", highlight=False, soft_wrap=True)
    if json_out:
        typer.echo(json.dumps(report))
    else:
        err.print(ingest_table(report))
