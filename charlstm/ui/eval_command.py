"""`charlstm eval --per-char`'s terminal side: the text coloured by surprise, its legend, and the
most surprising characters (surprise.py computes them and builds the HTML page).
"""

from __future__ import annotations

from pathlib import Path

from ..evaluation.surprise import MAX_BITS, colour_of_bits, most_surprising, shown_char, surprise_html


def surprise_text(result: dict):
    """The text on a background from white (expected) to red (≥ MAX_BITS bits), for a terminal."""
    from rich.text import Text

    from .render import append_on_colour

    out = Text()
    for entry in result["characters"]:
        append_on_colour(out, entry["char"], colour_of_bits(entry["bits"]))
    return out


def surprise_legend():
    from rich.text import Text

    from .render import hex_colour

    out = Text("bits ")
    out.append("0 ")
    for k in range(15):
        out.append(" ", style=f"on {hex_colour(colour_of_bits(MAX_BITS * k / 14))}")
    out.append(f" ≥{MAX_BITS:g}")
    return out


def warn_unknown(chars: list[str], err) -> None:
    """The characters of a text the model does not know (each scored as the unknown symbol), on stderr."""
    from rich.markup import escape

    if chars:
        shown = " ".join(repr(ch) for ch in chars[:20])
        more = f" and {len(chars) - 20} more" if len(chars) > 20 else ""
        err.print(
            f"[yellow]warning:[/yellow] characters the model does not know, scored as unknown: {escape(shown)}{more}",
            highlight=False,
        )


def report_surprise(result: dict, err, json_out: bool = False, html_out: str | Path | None = None) -> None:
    """Print the result: JSON on stdout, or the coloured text on stdout and a summary on stderr;
    with `html_out`, also write the page."""
    import json

    from rich.console import Console
    from rich.markup import escape

    from ..core.userio import write_output

    if html_out is not None:
        write_output(html_out, surprise_html(result).encode("utf-8"))
    warn_unknown(result["unknown_chars"], err)
    if json_out:
        print(json.dumps({k: v for k, v in result.items() if k != "text"}, ensure_ascii=False))
        return
    out = Console(highlight=False)
    out.print(surprise_text(result), end="" if result["text"].endswith("\n") else "\n")
    err.print(surprise_legend())
    err.print(
        f"{escape(result['source'])}: [bold]{result['bpc']:.4f}[/bold] bits per character over {result['chars']:,} "
        f"characters, scored as one stream ({escape(result['checkpoint'])}, "
        f"{result['precision']} on {result['device']})",
        highlight=False,
    )
    err.print("most surprising (line:column):", highlight=False)
    for s in most_surprising(result, 10):
        guesses = ", ".join(f"{shown_char(sym)} {p:.0%}" for sym, p in s["top"][:3])
        err.print(
            f"  {s['line']}:{s['column']}  {shown_char(s['char'])}  {s['bits']:.1f} bits  (expected {guesses})",
            markup=False,
            highlight=False,
        )
    if html_out is not None:
        err.print(f"wrote {escape(str(html_out))}", highlight=False)


def run_syntax_eval(
    checkpoint: str | None,
    err,
    json_out: bool,
    *,
    device: str,
    samples: int,
    length: int,
    temperature: float,
    prime: str | None,
    seed: int,
    draw: str,
    text_options: tuple,
) -> None:
    """`charlstm eval --syntax`: draw samples, parse their units, print the share that parse."""
    import json

    from rich.markup import escape

    from ..core.errors import CharlstmError
    from ..sampling.sample import Sampler, SampleSettings, unescape
    from ..evaluation.syntax_eval import syntax_rate

    if any(text_options):
        raise CharlstmError("--syntax draws its own samples: drop --data, --text-file, --per-char and --dynamic")
    SampleSettings(length=length, temperature=temperature, seed=seed).validate()
    sampler, opened = Sampler.from_checkpoint(checkpoint, device=device)
    result = syntax_rate(sampler, samples, length, temperature, None if prime is None else unescape(prime), seed, draw)
    result["checkpoint"] = str(opened.path)
    if json_out:
        print(json.dumps(result, ensure_ascii=False))
        return
    rate = "no complete unit" if result["rate"] is None else f"[bold]{result['rate']:.0%}[/bold]"
    err.print(
        f"{rate} of complete top-level units parse: {result['parsed']} of {result['units']} ({result['language']}, "
        f"{samples} samples of {length:,} characters at T={temperature:g}, {draw} drawing, seed {seed}, "
        f"{result['seconds']:.1f} s)",
        highlight=False,
    )
    if draw == "valid":
        err.print(valid_summary(result["tries"], result["dropped"], result["lines_redrawn"], result["seconds"]), highlight=False)
    for failure in result["failures"]:
        head = failure["unit"].strip().splitlines()[0][:60] if failure["unit"].strip() else ""
        err.print(f"  {escape(failure['error'])}  in  {escape(repr(head))}", highlight=False)


def valid_summary(tries: list[int], dropped: int, lines_redrawn: int, seconds: float) -> str:
    """--valid's line on stderr: units accepted, draws per unit, time per accepted unit."""
    if not tries:
        return f"--valid: no unit accepted ({dropped} dropped, {seconds:.1f} s)"
    mean = sum(tries) / len(tries)
    return (f"--valid: {len(tries)} units accepted, {mean:.2f} draws per unit (at most {max(tries)}), "
            f"{lines_redrawn} lines drawn again, {dropped} units dropped; {seconds / len(tries):.2f} s per accepted unit")


def training_syntax(run_dir: str) -> dict | None:
    """The end of `train`: how often the new model's code parses (8 samples of 600 characters at
    T=0.7, plain drawing, on one CPU thread: a second stalls on shared cores), when its language
    has a parser; None when it has none."""
    from ..core.backend import torch_threads
    from ..core.errors import CharlstmError
    from ..sampling.sample import Sampler
    from ..evaluation.syntax_eval import syntax_rate

    try:
        with torch_threads(1):
            sampler, _ = Sampler.from_checkpoint(run_dir, device="cpu")
            result = syntax_rate(sampler, samples=8, length=600)
    except CharlstmError:
        return None  # no parser for this language (or no checkpoint yet): nothing to measure
    return {k: result[k] for k in ("units", "parsed", "rate")}


def syntax_line(syntax: dict) -> str:
    where = "8 samples of 600 characters at T=0.7; `charlstm eval RUN --syntax` for more"
    if syntax["rate"] is None:
        return f"syntax: no complete top-level unit yet ({where})"
    return (
        f"syntax: {syntax['rate']:.0%} of complete top-level units parse ({syntax['parsed']} of "
        f"{syntax['units']} in {where})"
    )


def report_score(result: dict, err, json_out: bool) -> None:
    """`charlstm eval`'s figure: JSON on stdout, or one line (two with --dynamic) on stderr."""
    import json

    from rich.markup import escape

    warn_unknown(result["unknown_chars"], err)
    if json_out:
        print(json.dumps(result))
        return
    err.print(
        f"{escape(result['source'])}: [bold]{result['bpc']:.4f}[/bold] bits per character over "
        f"{result['chars']:,} characters ({escape(result['checkpoint'])}, step {result['step']}, "
        f"{result['precision']} on {result['device']}, {result['chars_per_sec']:,.0f} chars/s)",
        highlight=False,
    )
    if "dynamic" in result:
        d = result["dynamic"]
        err.print(
            f"dynamic evaluation: [bold]{d['bpc']:.4f}[/bold] bits per character "
            f"({d['bpc'] - result['bpc']:+.4f}; SGD lr {d['lr']:g} per {d['seq_len']}-character segment, "
            f"{d['seconds']:.1f} s)",
            highlight=False,
        )
