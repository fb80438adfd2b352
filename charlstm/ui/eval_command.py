"""`charlstm eval --per-char`'s terminal side: the text coloured by surprise, its legend, and the
most surprising characters (surprise.py computes them and builds the HTML page).
"""

from __future__ import annotations

import json

from ..evaluation.surprise import MAX_BITS, colour_of_bits, shown_char

PIECE = 8192  # characters of coloured text printed at a time (cut after a newline where there is one)


class ColouredText:
    """The text on a background from white (expected) to red (≥ MAX_BITS bits), printed on `out`
    as the scores come: a piece at a time, each cut after a newline where there is one, so a rich
    Text never holds more than a piece."""

    def __init__(self, out, text: str):
        self.out, self.text = out, text
        self.start = 0  # the first character not printed yet
        self.bits: list[float] = []  # the bits of the characters from `start` on

    def add(self, start: int, bits, top_ids=None, top_probs=None) -> None:
        self.bits.extend(bits.tolist())
        end = self.start + len(self.bits)
        if len(self.bits) >= PIECE:
            newline = self.text.rfind("\n", self.start, end)
            self._print(newline + 1 if newline >= 0 else end)

    def finish(self) -> None:
        self._print(self.start + len(self.bits))
        if not self.text.endswith("\n"):
            self.out.print()

    def _print(self, end: int) -> None:
        from rich.text import Text

        from .render import append_on_colour

        piece = Text()
        # strict=False: a piece cut at a newline ends before the characters scored so far do.
        for ch, b in zip(self.text[self.start : end], self.bits, strict=False):
            append_on_colour(piece, ch, colour_of_bits(b))
        self.out.print(piece, end="")
        del self.bits[: end - self.start]
        self.start = end


class JsonCharacters:
    """--json, written as the scores come: the head, every character (its bits and the model's top
    guesses), then the totals; the whole text is never one string in memory."""

    def __init__(self, text: str, symbols, head: dict):
        self.text, self.symbols, self.first = text, symbols, True
        print(json.dumps(head, ensure_ascii=False)[:-1] + ', "characters": [', end="")  # print: stdout may be closed

    def add(self, start: int, bits, top_ids, top_probs) -> None:
        from ..evaluation.surprise import guesses

        entries = (
            json.dumps(
                {
                    "char": self.text[start + k],
                    "bits": round(b, 4),
                    "top": guesses(self.symbols, top_ids[k], top_probs[k]),
                },
                ensure_ascii=False,
            )
            for k, b in enumerate(bits.tolist())
        )
        print(("" if self.first else ", ") + ", ".join(entries), end="")
        self.first = False

    def finish(self, tail: dict) -> None:
        print("], " + json.dumps(tail)[1:])


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


def run_per_char(
    checkpoint: str | None,
    text_file: str,
    html_out: str | None,
    json_out: bool,
    err,
    *,
    device: str,
    precision: str | None,
) -> None:
    """`charlstm eval --per-char --text-file F`: every character's bits and the model's top guesses,
    as the coloured text on stdout (or --json) and a summary on stderr; with `html_out`, the page.
    Streams: the scores go out a block at a time, and what is kept does not grow with the text."""
    import time

    import numpy as np
    from rich.console import Console

    from ..core.errors import shown_path
    from ..core.userio import check_output, read_text_source, refuse_output_over_input, write_output
    from ..evaluation.evaluate import load_for_scoring
    from ..evaluation.surprise import MostSurprising, SurprisePage, Totals, score_blocks

    refuse_output_over_input({"--html": html_out}, {"--text-file": text_file})
    if html_out is not None:
        check_output(html_out)  # before the scoring, not after it
    opened, prec = load_for_scoring(checkpoint, device, precision)
    path, payload, model, vocab, dev = opened.path, opened.payload, opened.model, opened.vocab, opened.device
    text = read_text_source(text_file)
    tokens = np.concatenate([[vocab.doc_sep], vocab.encode(text)])
    unknown = vocab.unknown_chars(text)
    warn_unknown(unknown, err)
    totals, worst = Totals(), MostSurprising(10)
    page = SurprisePage(text, vocab.symbols, str(text_file), str(path)) if html_out is not None else None
    head = {
        "source": str(text_file),
        "checkpoint": str(path),
        "step": payload.get("step"),
        "precision": prec.name,
        "device": str(dev),
        "chars": len(text),
        "unknown_chars": unknown,
    }
    shown = JsonCharacters(text, vocab.symbols, head) if json_out else ColouredText(Console(highlight=False), text)
    started = time.perf_counter()
    for block in score_blocks(model, tokens, device=dev, autocast=prec.autocast):
        for keeper in (totals, worst, page, shown):
            if keeper is not None:
                keeper.add(*block)
    seconds = round(time.perf_counter() - started, 3)
    if json_out:
        shown.finish({"bits": totals.bits, "bpc": totals.bpc, "seconds": seconds})
    else:
        shown.finish()
    if page is not None:
        write_output(html_out, page.render(totals.bpc).encode("utf-8", "surrogatepass"))
    if json_out:
        return
    err.print(surprise_legend())
    err.print(
        f"{shown_path(text_file)}: {totals.bpc:.4f} bits per character over {len(text):,} characters, scored as "
        f"one stream ({shown_path(path)}, {prec.name} on {dev})",
        markup=False,
        highlight=False,
    )
    err.print("most surprising (line:column):", highlight=False)
    for s in worst.entries(text, vocab.symbols):
        expected = ", ".join(f"{shown_char(sym)} {p:.0%}" for sym, p in s["top"][:3])
        err.print(
            f"  {s['line']}:{s['column']}  {shown_char(s['char'])}  {s['bits']:.1f} bits  (expected {expected})",
            markup=False,
            highlight=False,
        )
    if page is not None:
        cut = (
            f"; the first {page.shown:,} of {len(text):,} characters, as a page holds at most {page.cap / 1e6:g} MB"
            if page.shown < len(text)
            else ""
        )
        err.print(f"wrote {shown_path(html_out)}{cut}", markup=False, highlight=False)


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
    from ..evaluation.syntax_eval import syntax_rate
    from ..sampling.sample import Sampler, SampleSettings, unescape

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
        err.print(
            valid_summary(result["tries"], result["dropped"], result["lines_redrawn"], result["seconds"]),
            highlight=False,
        )
    for failure in result["failures"]:
        head = failure["unit"].strip().splitlines()[0][:60] if failure["unit"].strip() else ""
        err.print(f"  {escape(failure['error'])}  in  {escape(repr(head))}", highlight=False)


def valid_summary(tries: list[int], dropped: int, lines_redrawn: int, seconds: float) -> str:
    """--valid's line on stderr: units accepted, draws per unit, time per accepted unit."""
    if not tries:
        return f"--valid: no unit accepted ({dropped} dropped, {seconds:.1f} s)"
    mean = sum(tries) / len(tries)
    return (
        f"--valid: {len(tries)} units accepted, {mean:.2f} draws per unit (at most {max(tries)}), "
        f"{lines_redrawn} lines drawn again, {dropped} units dropped; {seconds / len(tries):.2f} s per accepted unit"
    )


def training_syntax(run_dir: str) -> dict | None:
    """The end of `train`: how often the new model's code parses (8 samples of 600 characters at
    T=0.7, plain drawing, on one CPU thread: a second stalls on shared cores), when its language
    has a parser; None when it has none."""
    from ..core.backend import torch_threads
    from ..core.errors import CharlstmError
    from ..evaluation.syntax_eval import syntax_rate
    from ..sampling.sample import Sampler

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
    from rich.markup import escape

    from ..core.errors import shown_path

    warn_unknown(result["unknown_chars"], err)
    if json_out:
        print(json.dumps(result))
        return
    err.print(
        f"{escape(shown_path(result['source']))}: [bold]{result['bpc']:.4f}[/bold] bits per character "
        f"over {result['chars']:,} characters "
        f"({escape(shown_path(result['checkpoint']))}, step {result['step']}, "
        f"{result['precision']} on {result['device']}, "
        f"{result['chars_per_sec']:,.0f} chars/s)",
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
