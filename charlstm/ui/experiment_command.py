"""`charlstm experiment`'s terminal side: each study's tables and coloured units, and the
comparison of all four with the article.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..analysis.experiments import NAMES, STUDIES, configured_study, run_study, write_html
from ..core.backend import sampling_device
from ..core.config import STUDY_DEVICES
from ..core.errors import CharlstmError, shown_path
from ..core.userio import check_output
from .terminal import Terminal


def _mark(value) -> Text:
    if isinstance(value, bool):
        return Text("right", style="green") if value else Text("wrong", style="red")
    style = "green" if value == 1.0 else ("yellow" if value >= 0.5 else "red")
    return Text(f"{value:.0%}", style=style)


def report(result: dict, console: Console) -> None:
    """The per-N table, the summary, and each found unit coloured along a sequence."""
    from .render import colour_text, legend

    ev = result["evaluation"]
    what = {"counter": "N", "selective-counter": "N (a's)", "state": "x's", "copy": "length"}[result["study"]]
    table = Table(title="greedy generation after the prompt", title_justify="left")
    table.add_column(what, justify="right")
    table.add_column("result" if result["study"] == "counter" else "accuracy", justify="right")
    table.add_column("")
    for n, value in ev["per_n"].items():
        table.add_row(n, _mark(value), "in training range" if int(n) <= result["max_n"] else "beyond training")
    console.print(table)
    summary = Table(show_header=False, box=None, padding=(0, 2))
    summary.add_row(
        "model",
        f"{result['model']['layers']} × {result['model']['hidden']} LSTM, "
        f"{result['steps']} steps in {result['train_seconds']} s "
        f"(final loss {result['final_loss']})",
    )
    if "max_n_correct" in ev:
        summary.add_row("max_n_correct", str(ev["max_n_correct"]))
    summary.add_row("accuracy", f"{ev['accuracy']:.1%} for N ≤ {result['max_n']}")
    summary.add_row("ours", result["ours"])
    summary.add_row("article", result["article"])
    summary.add_row("run", result["run"])
    console.print(summary)
    for failure in ev["failures"][:3]:
        console.print(
            Text(
                f"  wrong: {failure['prompt']} → {failure['generated']!r} (expected {failure['expected']!r})",
                style="dim",
            )
        )
    for view in result["views"]:
        console.print(Text(view["caption"], style="bold"))
        command = (
            f"  charlstm inspect-neuron {result['run']} --layer {view['layer']} --neuron {view['neuron']} "
            f"--state {view['signal']} --text '{view['text']}'"
        )
        console.print(Text(command, style="dim"), soft_wrap=True)
        scale = view.get("scale")
        if scale is None and view["signal"] == "cell":
            scale = max(abs(v) for v in view["values"]) or 1.0
        console.print(Text("  ").append(colour_text(view["text"], view["values"], view["signal"], scale=scale)))
        console.print(Text("  ").append(legend(view["signal"], scale=scale)))


def comparison_table(results: dict[str, dict]) -> Table:
    """`experiment all`: our results beside the article's claims."""
    table = Table(
        title="charlstm experiment all: our results beside the article's", title_justify="left", show_lines=True
    )
    table.add_column("study")
    table.add_column("ours", ratio=3)
    table.add_column("article", ratio=2)
    for name, r in results.items():
        study = Text(name, style="bold").append(
            f"\n{r['model']['layers']}×{r['model']['hidden']} LSTM\n{r['train_seconds']:.0f} s training", style="dim"
        )
        table.add_row(study, r["ours"], r["article"])
    return table


def html_path(html: Path | str, study: str, several: bool) -> Path:
    """With several studies, one page each: OUT.html → OUT-STUDY.html."""
    html = Path(html)
    return html.with_name(f"{html.stem}-{study}{html.suffix or '.html'}") if several else html


def strip_views(result: dict) -> dict:
    """The result without its long per-character value lists (for --json on stdout)."""
    return {k: v for k, v in result.items() if k != "views"}


def run_experiments(
    name: str, console: Console, quiet: bool = False, html: Path | str | None = None, device: str = "auto", **options
) -> dict:
    """`charlstm experiment NAME|all`: run, report each on `console`, return results by study."""
    names = NAMES if name == "all" else (name,)
    if name != "all" and name not in STUDIES:
        raise CharlstmError(f"unknown experiment {name!r}; choose one of {', '.join(NAMES)} or all")
    if device not in STUDY_DEVICES:
        raise CharlstmError(f"--device must be one of {', '.join(STUDY_DEVICES)}, got {device!r}")
    dev = sampling_device(device)  # auto: a CUDA GPU when there is one, else the CPU
    if html is not None and not Path(html).name:  # "", ".", "/": no file name to write (or to add -STUDY to)
        raise CharlstmError(f"--html needs a file name, got {str(html)!r}")
    for study in names:  # every study's options and page are checked before the first one trains
        configured_study(
            study, options.get("seed", 0), options.get("steps"), options.get("max_n"), options.get("eval_max_n")
        )
        if html is not None:
            check_output(html_path(html, study, len(names) > 1))
    results = {}
    for study in names:
        if not quiet:
            console.rule(f"experiment {study}")
        with Terminal(leave=False) as show:  # the training's progress bar, on a terminal
            results[study] = run_study(study, device=dev, on_event=None if quiet else show, **options)
        if not quiet:
            report(results[study], console)
        if html is not None:
            page = write_html(results[study], html_path(html, study, len(names) > 1), dev)
            results[study]["html"] = page["path"]
            if not quiet:
                console.print(f"explorer page: {shown_path(page['path'])} ({page['bytes']:,} bytes)", highlight=False)
    if name == "all":
        console.print(comparison_table(results))
    return results
