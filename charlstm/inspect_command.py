"""`charlstm inspect-neuron`: checks the flag combinations, runs the mode asked for (one neuron
coloured over a text, --find, --stats, --html, --ablate, --top-contexts) and shows its result.

The analysis lives in neurons.py, interventions.py, contexts.py and explorer.py and returns data;
this module alone talks to the terminal for the command.
"""

from __future__ import annotations

import json

from rich.console import Console
from rich.markup import escape

from charlstm import explorer, interventions, render
from charlstm.contexts import contexts_view, unit_top_contexts
from charlstm.errors import CharlstmError
from charlstm.explorer import most_chars, write_explorer
from charlstm.explorer import default_chars as html_chars
from charlstm.features import is_binary, validate_feature
from charlstm.neurons import GateSaturation, UnitSignals, choose_text, cut_text, find_units, open_checkpoint, trace_into
from charlstm.userio import write_output


def tracing_progress(status):
    """A `trace_into` progress callback that updates a rich status line."""
    return lambda done, total: status.update(f"tracing {done:,} of {total:,} characters…")


INSPECT_STATES = ("hidden", "cell", "input", "forget", "output", "candidate", "reset", "update", "all")
# An SVG records every character's style: ~1.4 KB each while it is drawn, a ~5 MB picture at the limit.
SVG_MAX_CHARS = 20_000


def inspect_neuron(
    checkpoint: str | None,
    *,
    layer: int | None = None,
    neuron: int | None = None,
    state: str | None = None,
    text: str | None = None,
    text_file: str | None = None,
    from_val: int | None = None,
    data: str | None = None,
    find: str | None = None,
    top: int = 10,
    stats: bool = False,
    json_out: bool = False,
    html: str | None = None,
    svg: str | None = None,
    exact: bool = False,
    ablate: list[str] | None = None,
    causal: bool = False,
    controls: int = 8,
    seed: int = 0,
    top_contexts: int | None = None,
    max_chars: int | None = None,
    err,
) -> None:
    """`charlstm inspect-neuron`: one neuron coloured over a text, --find, --stats, --html, --ablate
    or --top-contexts.

    Tables and messages go to `err` (stderr); coloured text and --json to stdout; with `svg` the
    coloured view is also saved as an SVG picture (for a README, a paper, an issue).
    """
    modes, specs = _check_flags(layer, neuron, state, find, top, stats, json_out, html, svg, ablate, causal, controls,
                                seed, top_contexts, max_chars)  # fmt: skip

    inspection = open_checkpoint(checkpoint, exact=exact)
    if layer is not None or neuron is not None:
        if layer is None or neuron is None:
            raise CharlstmError("give both --layer and --neuron")
        inspection.check_unit(layer, neuron)
    if state not in (None, "all"):
        inspection.check_signal(state)
    if ablate:
        interventions.resolve(specs, inspection.kind, inspection.layers, inspection.hidden)
    if not modes and (layer is None or neuron is None):
        raise CharlstmError("give --layer and --neuron (or --find FEATURE, --stats, --html OUT.html)")
    if html is not None:
        default_chars = html_chars(inspection)
    elif top_contexts is not None:
        default_chars = 1 << 62  # the whole validation split (or the excerpt a run carries)
    else:
        default_chars = 5000 if (find or stats or ablate) else 1000
    chosen, source = choose_text(inspection, text, text_file, from_val, data, default_chars)
    if max_chars is not None:
        chosen, source = cut_text(chosen, source, max_chars)
    if svg is not None and len(chosen) > SVG_MAX_CHARS:
        raise CharlstmError(
            f"--svg draws at most {SVG_MAX_CHARS:,} characters and this text has {len(chosen):,}; "
            f"add --max-chars {SVG_MAX_CHARS}"
        )

    if ablate and html is None:
        return _ablate_units(inspection, chosen, source, specs, controls, seed, json_out, err)
    if top_contexts is not None:
        return _top_contexts(inspection, chosen, source, layer, neuron, state, top_contexts, json_out, err)
    if html is not None:
        return _explorer_page(inspection, chosen, source, html, layer, neuron, state, specs, err)
    if find is not None:
        return _find(inspection, chosen, source, find, top, causal, controls, seed, json_out, err)
    if stats:
        return _stats(inspection, chosen, source, json_out, err)
    return _one_unit(inspection, chosen, source, layer, neuron, state, svg, err)


def _check_flags(layer, neuron, state, find, top, stats, json_out, html, svg, ablate, causal, controls, seed,
                 top_contexts, max_chars) -> tuple[list[str], list | None]:
    """The flag combinations that make no sense, refused before the checkpoint is read. Returns the
    modes asked for and the parsed --ablate units (None without --ablate)."""
    modes = [name for name, on in (("--find", find is not None), ("--stats", stats), ("--html", html is not None),
                                   ("--ablate", bool(ablate) and html is None), ("--top-contexts", top_contexts is not None)) if on]  # fmt: skip
    if len(modes) > 1:
        raise CharlstmError(f"choose one of {', '.join(modes)} at a time")
    if json_out and not (find or stats or ablate or top_contexts is not None):
        raise CharlstmError("--json goes with --find, --stats, --ablate or --top-contexts")
    if causal and find is None:
        raise CharlstmError("--causal adds the ablation effect to --find FEATURE's ranking; give --find")
    if ablate and html is None and (layer is not None or neuron is not None):
        raise CharlstmError("--ablate names its units itself (L:N); drop --layer and --neuron")
    if top_contexts is not None and (layer is None or neuron is None):
        raise CharlstmError("--top-contexts needs the unit: --layer and --neuron")
    if (ablate or causal) and controls < 1:
        raise CharlstmError(f"--controls must be at least 1, got {controls}")
    if (ablate or causal) and controls > interventions.MAX_CONTROLS:
        raise CharlstmError(f"--controls must be at most {interventions.MAX_CONTROLS}, got {controls}")
    if (ablate or causal) and seed < 0:
        raise CharlstmError(f"--seed must be 0 or more, got {seed}")
    specs = [interventions.parse_unit(a, "--ablate") for a in ablate] if ablate else None
    if svg is not None and modes:
        raise CharlstmError(f"--svg saves the view of one neuron; it does not go with {modes[0]}")
    if state is not None and state not in INSPECT_STATES:
        raise CharlstmError(f"unknown --state {state!r}; choose one of {', '.join(INSPECT_STATES)}")
    if find is not None:
        validate_feature(find)  # before the slow part
        if top < 1:
            raise CharlstmError(f"--top must be at least 1, got {top}")
    if max_chars is not None and max_chars < 1:
        raise CharlstmError(f"--max-chars must be at least 1, got {max_chars}")
    return modes, specs


def _ablate_units(inspection, chosen: str, source: str, specs, controls: int, seed: int, json_out: bool, err) -> None:
    """--ablate: bits per character with the units zeroed, against random controls."""
    with err.status(f"scoring {len(chosen):,} characters, {1 + 1 + controls} ways…"):
        report = interventions.ablate_units(inspection, chosen, specs, controls, seed)
    if json_out:
        print(json.dumps({"source": source, **report}))
        return
    units = ", ".join(f"{la}:{n}" for la, n in report["units"])
    err.print(interventions.ablation_table(report, f"Ablating {units} over {escape(source)}"))


def _top_contexts(inspection, chosen: str, source: str, layer: int, neuron: int, state: str | None, k: int,
                  json_out: bool, err) -> None:
    """--top-contexts: where the unit is most positive and most negative."""
    with err.status(f"tracing {len(chosen):,} characters…"):
        result = unit_top_contexts(inspection, chosen, layer, neuron, state or "hidden", k)
    if json_out:
        print(json.dumps({"source": source, **result}))
        return
    out = Console(highlight=False)
    for view in contexts_view(result, escape(source), out.width):
        out.print(view)


def _explorer_page(inspection, chosen: str, source: str, html: str, layer: int | None, neuron: int | None,
                   state: str | None, specs, err) -> None:
    """--html: the explorer page (with --ablate, opened on the first ablated unit)."""
    most = most_chars(inspection)
    if len(chosen) > most:  # the page shows the start of a long text, and says so
        err.print(
            f"note: one page holds {most:,} characters with this model ({explorer.MAX_VALUES:,} values); it shows the "
            f"first {most:,} of {len(chosen):,} (--max-chars picks fewer)",
            highlight=False,
        )
        chosen, source = cut_text(chosen, source, most, ": the most one page holds")

    with err.status(f"tracing {len(chosen):,} characters…"):
        if specs and layer is None:  # open the page on the (first) ablated unit
            layer, neuron = specs[0].layer, specs[0].neuron
        summary = write_explorer(
            html, inspection, chosen, source, layer=layer, neuron=neuron, signal=None if state == "all" else state,
            ablate=[(s.layer, s.neuron) for s in specs] if specs else None,
        )
    err.print(
        f"wrote {escape(html)} ({summary['bytes'] / 1e6:.1f} MB: {summary['chars']:,} characters, "
        f"{summary['layers']} layers × {summary['hidden']} neurons × {len(summary['signals'])} signals)",
        highlight=False,
    )


def _find(inspection, chosen: str, source: str, find: str, top: int, causal: bool, controls: int, seed: int,
          json_out: bool, err) -> None:
    """--find FEATURE: the units that follow it most closely (--causal: and what ablating each costs)."""
    width = max(24, err.width - 45)  # the snippet's width: the rest of the table's row fits
    if causal:  # two more columns: Δ all, and Δ on the feature's own characters
        width = max(10, width - 10 - 3 - max(7, len(interventions.own_header(find))))
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
            for entry, u in zip(ranked_units, units):
                entry["ablation"] = effects["by_unit"][(u.layer, u.neuron)]["delta"]
            effects = {k: v for k, v in effects.items() if k not in ("by_unit", "ablations")}
        print(json.dumps({"feature": find, "chars": len(chosen), "neurons": ranked_units, "causal": effects}))
        return
    measure = "point-biserial r" if is_binary(find) else "Pearson r"
    title = f"Units following {find!r} ({measure} over {source})"
    extra = interventions.causal_columns(effects, units) if effects is not None else []
    table = render.find_table(find, units, found.snippets, found.feature, chosen, found.window, title, extra)
    if effects is not None:
        table.caption = interventions.causal_caption(effects)
    err.print(table)
    if units:
        best = units[0]
        err.print(
            f"see one: charlstm inspect-neuron {escape(str(inspection.path))} --layer {best.layer} "
            f"--neuron {best.neuron} --state {best.signal}",
            highlight=False,
        )


def _stats(inspection, chosen: str, source: str, json_out: bool, err) -> None:
    """--stats: how often each layer's gates saturate."""
    counts = GateSaturation(inspection.kind)  # an RNN has no gates: say so before tracing
    with err.status(f"tracing {len(chosen):,} characters…") as status:
        trace_into(inspection, chosen, [counts], tracing_progress(status))
    rows = counts.rows()
    if json_out:
        print(json.dumps({"chars": len(chosen), "gates": rows}))
        return
    err.print(render.stats_table(rows, f"Gate saturation ({source}; {escape(inspection.describe())})"))


def _one_unit(inspection, chosen: str, source: str, layer: int, neuron: int, state: str | None, svg: str | None,
             err) -> None:
    """One unit's signal(s) colouring the text (--svg: also saved as a picture)."""
    signals = inspection.signals if state == "all" else (state or "hidden",)
    unit = UnitSignals(layer, neuron, signals, len(chosen))
    with err.status(f"tracing {len(chosen):,} characters…") as status:
        trace_into(inspection, chosen, [unit], tracing_progress(status))
    out = Console(highlight=False, record=svg is not None)
    err.print(
        f"layer {layer} of {inspection.layers}, neuron {neuron} (0-based) — {escape(inspection.describe())}; {escape(source)}",
        highlight=False,
    )
    for signal in signals:
        values = unit.values[signal]
        scale = render.value_range(signal, values)[1]
        if state == "all":
            out.rule(f"{signal}", align="left")
        render.print_coloured(out, chosen, values, signal, scale)
        out.print(render.legend(signal, scale if signal == "cell" else None))
    if svg is not None:
        title = f"layer {layer}, neuron {neuron}: {state or 'hidden'}"
        picture = out.export_svg(title=title).encode("utf-8")
        write_output(svg, picture)
        err.print(f"wrote {escape(svg)}", highlight=False)
