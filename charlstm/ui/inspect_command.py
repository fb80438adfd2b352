"""`charlstm inspect-neuron`: checks the flag combinations, runs the mode asked for (one neuron
coloured over a text, --find, --stats, --html, --ablate, --top-contexts) and shows its result.

The analysis lives in neurons.py, interventions.py, contexts.py and explorer.py and returns data;
this module alone talks to the terminal for the command.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape

from ..analysis import explorer, interventions
from ..analysis.contexts import unit_top_contexts
from ..analysis.explorer import default_chars as html_chars
from ..analysis.explorer import most_chars, write_explorer
from ..analysis.features import is_binary, validate_feature
from ..analysis.neurons import choose_text, cut_text, dataset_at_hand, find_units, open_checkpoint
from ..analysis.saturation import GateSaturation
from ..analysis.scales import value_range
from ..analysis.tracing import UnitSignals, trace_into, trace_joined
from ..core import units
from ..core.errors import CharlstmError, shell_path, shown_path
from ..core.userio import refuse_output_over_input, write_output
from . import render


def tracing_progress(status):
    """A `trace_into` progress callback that updates a rich status line: how far, how fast, how long
    is left (a whole training split takes minutes on a CPU). A count that starts over is a seeded
    pass (lanes that did not join, traced again): it is timed afresh and named."""
    start, last, passes = time.monotonic(), 0, 1

    def update(done: int, total: int) -> None:
        nonlocal start, last, passes
        if done < last:
            start, passes = time.monotonic(), passes + 1
        last = done
        elapsed = time.monotonic() - start
        rate = done / elapsed if elapsed > 0 else 0.0
        left = ""
        if rate > 0 and elapsed > 3:
            minutes, seconds = divmod(round((total - done) / rate), 60)
            left = f", about {minutes} min {seconds:02d} s left" if minutes else f", about {seconds} s left"
        again = f" again (pass {passes}: the lanes had not joined)" if passes > 1 else ""
        status.update(f"tracing {done:,} of {total:,} characters{again} ({rate:,.0f} a second{left})…")

    return update


INSPECT_STATES = ("hidden", "cell", "input", "forget", "output", "candidate", "reset", "update", "all")
# An SVG records every character's style: ~1.4 KB each while it is drawn, a ~5 MB picture at the limit.
SVG_MAX_CHARS = 20_000


@dataclass(frozen=True)
class InspectOptions:
    """inspect-neuron's options, as the command line gives them (None: not given)."""

    layer: int | None = None  # 1-based
    neuron: int | None = None  # 0-based
    state: str | None = None  # a signal, or "all"
    text: str | None = None
    text_file: str | None = None
    from_val: int | None = None
    split: str | None = None  # train | val (None: val, or train for --top-contexts where the dataset is)
    data: str | None = None
    max_chars: int | None = None
    find: str | None = None
    top: int = 10
    stats: bool = False
    top_contexts: int | None = None
    json_out: bool = False
    html: str | None = None
    svg: str | None = None
    exact: bool = False
    ablate: list[str] | None = None
    causal: bool = False
    controls: int = 8
    seed: int = 0
    device: str = "auto"  # auto | cuda | mps | cpu

    @property
    def unit_given(self) -> bool:
        return self.layer is not None and self.neuron is not None


def inspect_neuron(checkpoint: str | None, opts: InspectOptions, *, err) -> None:
    """`charlstm inspect-neuron`: one neuron coloured over a text, --find, --stats, --html, --ablate
    or --top-contexts.

    Tables and messages go to `err` (stderr); coloured text and --json to stdout; with `svg` the
    coloured view is also saved as an SVG picture (for a README, a paper, an issue).
    """
    modes, specs = _check_flags(opts)
    refuse_output_over_input({"--html": opts.html, "--svg": opts.svg}, {"--text-file": opts.text_file})
    inspection = open_checkpoint(checkpoint, exact=opts.exact, device=opts.device)
    _check_against_model(inspection, opts, specs, modes)
    chosen, source = _text(inspection, opts)
    if opts.ablate and opts.html is None:
        return _ablate_units(inspection, chosen, source, specs, opts.controls, opts.seed, opts.json_out, err)
    if opts.top_contexts is not None:
        return _top_contexts(
            inspection, chosen, source, opts.layer, opts.neuron, opts.state, opts.top_contexts, opts.json_out, err
        )
    if opts.html is not None:
        return _explorer_page(inspection, chosen, source, opts.html, opts.layer, opts.neuron, opts.state, specs, err)
    if opts.find is not None:
        return _find(
            inspection, chosen, source, opts.find, opts.top, opts.causal, opts.controls, opts.seed, opts.json_out, err
        )
    if opts.stats:
        return _stats(inspection, chosen, source, opts.json_out, err)
    return _one_unit(inspection, chosen, source, opts.layer, opts.neuron, opts.state, opts.svg, err)


def _check_flags(o: InspectOptions) -> tuple[list[str], list | None]:
    """The flag combinations that make no sense, refused before the checkpoint is read. Returns the
    modes asked for and the parsed --ablate units (None without --ablate)."""
    modes = [
        name
        for name, on in (
            ("--find", o.find is not None),
            ("--stats", o.stats),
            ("--html", o.html is not None),
            ("--ablate", bool(o.ablate) and o.html is None),
            ("--top-contexts", o.top_contexts is not None),
        )
        if on
    ]
    if len(modes) > 1:
        raise CharlstmError(f"choose one of {', '.join(modes)} at a time")
    if o.json_out and o.html is not None:  # with --ablate, --html writes the page and prints no JSON
        raise CharlstmError("--json prints results on stdout; --html writes a page instead: give one of them")
    if o.json_out and not (o.find or o.stats or o.ablate or o.top_contexts is not None):
        raise CharlstmError("--json goes with --find, --stats, --ablate or --top-contexts")
    if o.causal and o.find is None:
        raise CharlstmError("--causal adds the ablation effect to --find FEATURE's ranking; give --find")
    if o.ablate and o.html is None and (o.layer is not None or o.neuron is not None):
        raise CharlstmError("--ablate names its units itself (L:N); drop --layer and --neuron")
    if o.split is not None and o.split not in ("train", "val"):
        raise CharlstmError(f"--split is train or val, not {o.split!r}")
    if o.split is not None and (o.text is not None or o.text_file is not None):
        raise CharlstmError("--split picks the dataset's split to read; it does not go with --text or --text-file")
    if o.top_contexts is not None and not o.unit_given:
        raise CharlstmError("--top-contexts needs the unit: --layer and --neuron")
    if o.top_contexts is not None and o.state == "all":
        raise CharlstmError("--top-contexts follows one signal; choose it with --state (not all)")
    unit_flags = o.layer is not None or o.neuron is not None or o.state is not None
    if unit_flags and (o.find is not None or o.stats):
        what = "--find ranks every unit and signal" if o.find is not None else "--stats covers every unit and gate"
        raise CharlstmError(f"{what}; drop --layer, --neuron and --state")
    if (o.ablate or o.causal) and o.controls < 1:
        raise CharlstmError(f"--controls must be at least 1, got {o.controls}")
    if (o.ablate or o.causal) and o.controls > interventions.MAX_CONTROLS:
        raise CharlstmError(f"--controls must be at most {interventions.MAX_CONTROLS}, got {o.controls}")
    if (o.ablate or o.causal) and o.seed < 0:
        raise CharlstmError(f"--seed must be 0 or more, got {o.seed}")
    specs = [units.parse_unit(a, "--ablate") for a in o.ablate] if o.ablate else None
    if o.svg is not None and modes:
        raise CharlstmError(f"--svg saves the view of one neuron; it does not go with {modes[0]}")
    if o.state is not None and o.state not in INSPECT_STATES:
        raise CharlstmError(f"unknown --state {o.state!r}; choose one of {', '.join(INSPECT_STATES)}")
    if o.find is not None:
        validate_feature(o.find)  # before the slow part
        if o.top < 1:
            raise CharlstmError(f"--top must be at least 1, got {o.top}")
    if o.max_chars is not None and o.max_chars < 1:
        raise CharlstmError(f"--max-chars must be at least 1, got {o.max_chars}")
    return modes, specs


def _check_against_model(inspection, o: InspectOptions, specs, modes: list[str]) -> None:
    """The unit, the signal and the --ablate units must exist in this model."""
    if o.layer is not None or o.neuron is not None:
        if not o.unit_given:
            raise CharlstmError("give both --layer and --neuron")
        inspection.check_unit(o.layer, o.neuron)
    if o.state not in (None, "all"):
        inspection.check_signal(o.state)
    if specs:
        units.resolve(specs, inspection.kind, inspection.layers, inspection.hidden)
    if not modes and not o.unit_given:
        raise CharlstmError("give --layer and --neuron (or --find FEATURE, --stats, --html OUT.html)")


def _text(inspection, o: InspectOptions) -> tuple[str, str]:
    """The text to inspect and where it came from; how much of the validation split depends on the mode."""
    if o.html is not None:
        default_chars = html_chars(inspection)
    elif o.top_contexts is not None:
        default_chars = 1 << 62  # the whole split
    else:
        default_chars = 5000 if (o.find or o.stats or o.ablate) else 1000
    split = o.split
    if split is None:
        split = "train" if o.top_contexts is not None and dataset_at_hand(inspection, o.data) else "val"
    chosen, source = choose_text(inspection, o.text, o.text_file, o.from_val, o.data, default_chars, split)
    if o.max_chars is not None:
        chosen, source = cut_text(chosen, source, o.max_chars)
    if o.svg is not None and len(chosen) > SVG_MAX_CHARS:
        raise CharlstmError(
            f"--svg draws at most {SVG_MAX_CHARS:,} characters and this text has {len(chosen):,}; "
            f"add --max-chars {SVG_MAX_CHARS}"
        )
    return chosen, source


def _ablate_units(inspection, chosen: str, source: str, specs, controls: int, seed: int, json_out: bool, err) -> None:
    """--ablate: bits per character with the units zeroed, against random controls."""
    with err.status(f"scoring {len(chosen):,} characters, {1 + 1 + controls} ways…"):
        report = interventions.ablate_units(inspection, chosen, specs, controls, seed)
    if json_out:
        print(json.dumps({"source": source, **report}))
        return
    units = ", ".join(f"{la}:{n}" for la, n in report["units"])
    err.print(render.ablation_table(report, f"Ablating {units} over {escape(source)}"))


def _top_contexts(
    inspection, chosen: str, source: str, layer: int, neuron: int, state: str | None, k: int, json_out: bool, err
) -> None:
    """--top-contexts: where the unit is most positive and most negative."""
    with err.status(f"tracing {len(chosen):,} characters…") as status:
        result = unit_top_contexts(inspection, chosen, layer, neuron, state or "hidden", k, tracing_progress(status))
    if json_out:
        print(json.dumps({"source": source, **result}))
        return
    out = Console(highlight=False)
    for view in render.contexts_view(result, escape(source), out.width):
        out.print(view)


def _explorer_page(
    inspection,
    chosen: str,
    source: str,
    html: str,
    layer: int | None,
    neuron: int | None,
    state: str | None,
    specs,
    err,
) -> None:
    """--html: the explorer page (with --ablate, opened on the first ablated unit)."""
    most, cap = most_chars(inspection), f"{explorer.MAX_PAGE_BYTES / 1e6:g} MB"
    if most < 1:
        raise CharlstmError(
            f"one character of this model's signals is more than a page holds (at most {cap}); "
            "use --find, --stats or --top-contexts"
        )
    if len(chosen) > most:  # the page shows the start of a long text, and says so
        err.print(
            f"note: a page holds at most {cap}: {most:,} characters with this model "
            f"({explorer.values_per_char(inspection):,} values each); it shows the first {most:,} of {len(chosen):,} "
            "(--max-chars picks fewer; --find, --stats and --top-contexts read the whole text)",
            highlight=False,
        )
        chosen, source = cut_text(chosen, source, most, f": the most one page holds, at most {cap}")

    with err.status(f"tracing {len(chosen):,} characters…"):
        if specs and layer is None:  # open the page on the (first) ablated unit
            layer, neuron = specs[0].layer, specs[0].neuron
        summary = write_explorer(
            html,
            inspection,
            chosen,
            source,
            layer=layer,
            neuron=neuron,
            signal=None if state == "all" else state,
            ablate=[(s.layer, s.neuron) for s in specs] if specs else None,
        )
    err.print(
        f"wrote {escape(shown_path(html))} ({summary['bytes'] / 1e6:.1f} MB: {summary['chars']:,} characters, "
        f"{summary['layers']} layer{'s' * (summary['layers'] != 1)} × {summary['hidden']} neurons × "
        f"{len(summary['signals'])} signals)",
        highlight=False,
    )


def _find(
    inspection,
    chosen: str,
    source: str,
    find: str,
    top: int,
    causal: bool,
    controls: int,
    seed: int,
    json_out: bool,
    err,
) -> None:
    """--find FEATURE: the units that follow it most closely (--causal: and what ablating each costs)."""
    width = max(24, err.width - 45)  # the snippet's width: the rest of the table's row fits
    if causal:  # two more columns: Δ all, and Δ on the feature's own characters
        width = max(10, width - 10 - 3 - max(7, len(render.own_header(find))))
    with err.status(f"tracing {len(chosen):,} characters…") as status:
        found = find_units(inspection, chosen, find, top, width, tracing_progress(status))
    units = found.units
    effects = None
    if causal:
        targets = len({(u.layer, u.neuron) for u in units})
        with err.status(f"ablating {targets} units and {controls} controls per layer…"):
            effects = interventions.causal_effects(inspection, chosen, find, units, controls, seed)
    if json_out:
        ranked_units = [u.to_dict() for u in units]
        if effects is not None:
            for entry, u in zip(ranked_units, units, strict=True):
                entry["ablation"] = effects["by_unit"][(u.layer, u.neuron)]["delta"]
            effects = {k: v for k, v in effects.items() if k not in ("by_unit", "ablations")}
        lanes = found.lanes.to_dict() if found.lanes else None
        if found.lanes:
            for entry, u in zip(ranked_units, units, strict=True):
                entry["offset_in_lanes"] = found.lanes.offset(u.layer, u.neuron, u.signal)
        print(
            json.dumps(
                {"feature": find, "chars": len(chosen), "neurons": ranked_units, "causal": effects, "lanes": lanes}
            )
        )
        return
    measure = "point-biserial r" if is_binary(find) else "Pearson r"
    title = f"Units following {escape(repr(find))} ({measure} over {escape(source)})"
    extra = render.causal_columns(effects, units) if effects is not None else []
    table = render.find_table(find, units, found.snippets, found.feature, chosen, found.window, title, extra)
    captions = [render.causal_caption(effects)] if effects is not None else []
    if found.lanes:
        captions.append(found.lanes.describe())
        offset = [f"{u.layer}:{u.neuron} {u.signal}" for u in units if found.lanes.offset(u.layer, u.neuron, u.signal)]
        if offset:
            captions.append(
                f"{', '.join(offset)}: a memory longer than the warm-up (an integrating cell): its values in lanes "
                "are offset from a trace in one piece, and its r may differ from that trace's"
            )
    if captions:
        table.caption = "\n".join(captions)
    err.print(table)
    if units:
        best = units[0]
        err.print(
            f"see one: charlstm inspect-neuron {escape(shell_path(inspection.path))} --layer {best.layer} "
            f"--neuron {best.neuron} --state {best.signal}",
            highlight=False,
        )


def _stats(inspection, chosen: str, source: str, json_out: bool, err) -> None:
    """--stats: how often each layer's gates saturate."""
    fresh = functools.partial(GateSaturation, inspection.kind)
    fresh()  # an RNN has no gates: say so before tracing
    with err.status(f"tracing {len(chosen):,} characters…") as status:
        (counts,), lanes = trace_joined(inspection, chosen, lambda: (fresh(),), tracing_progress(status))
    rows = counts.rows()
    if json_out:
        print(json.dumps({"chars": len(chosen), "gates": rows, "lanes": lanes.to_dict() if lanes else None}))
        return
    table = render.stats_table(rows, f"Gate saturation ({escape(source)}; {escape(inspection.describe())})")
    if lanes:
        table.caption = f"{table.caption}\n{lanes.describe()}"
    err.print(table)


def _one_unit(
    inspection, chosen: str, source: str, layer: int, neuron: int, state: str | None, svg: str | None, err
) -> None:
    """One unit's signal(s) colouring the text (--svg: also saved as a picture)."""
    signals = inspection.signals if state == "all" else (state or "hidden",)
    unit = UnitSignals(layer, neuron, signals, len(chosen))
    with err.status(f"tracing {len(chosen):,} characters…") as status:
        trace_into(inspection, chosen, [unit], tracing_progress(status))
    out = Console(highlight=False, record=svg is not None)
    err.print(
        f"layer {layer} of {inspection.layers}, neuron {neuron} (0-based) — {escape(inspection.describe())}; "
        f"{escape(source)}",
        highlight=False,
    )
    for signal in signals:
        values = unit.values[signal]
        scale = value_range(signal, values)[1]
        if state == "all":
            out.rule(f"{signal}", align="left")
        render.print_coloured(out, chosen, values, signal, scale)
        out.print(render.legend(signal, scale if signal == "cell" else None))
    if svg is not None:
        title = f"layer {layer}, neuron {neuron}: {state or 'hidden'}"
        picture = out.export_svg(title=title).encode("utf-8")
        write_output(svg, picture)
        err.print(f"wrote {escape(shown_path(svg))}", highlight=False)
