"""The synthetic languages of the article's small studies, and how to judge a generation.

Every example is framed as START + body + END so the model sees where a sequence begins and must
say where it ends. A *prompt* is the framed prefix up to and including the separator (``X`` or
``Y``); the model's greedy *generation* after it is judged right when it is exactly the expected
answer followed by END. The judges are pure functions of (prompt, generated) so they can be tested
on hand-made generations.

- counter:           a^N X b^N
- selective-counter: N a's with X's scattered among them, Y, b^N (the X's must not be counted)
- state:             A or B, 1..K x's, Y, then the first letter in lower case
- copy:              a string over {a, b, c}, X, the same string again
"""

from __future__ import annotations

import random

from ..core.errors import CharlstmError
from ..core.vocab import SPECIALS, Vocab

START, END = "^", "$"
COPY_ALPHABET = "abc"

# Every study shares one small vocabulary: the reserved specials, the frame, then the letters.
SYMBOLS = (*SPECIALS, START, END, "A", "B", "X", "Y", "a", "b", "c", "x")


def vocab() -> Vocab:
    return Vocab(SYMBOLS)


def frame(body: str) -> str:
    return START + body + END


# ----- generators: body strings (no frame) -------------------------------------------------------


def counter_example(rng: random.Random, max_n: int = 10, n: int | None = None) -> str:
    n = rng.randint(1, max_n) if n is None else n
    return "a" * n + "X" + "b" * n


def selective_counter_example(rng: random.Random, max_n: int = 10, n: int | None = None, max_x: int = 5) -> str:
    """N a's with 0..max_x X's inserted at random places (before, between or after them), Y, b^N."""
    n = rng.randint(1, max_n) if n is None else n
    symbols = ["a"] * n
    for _ in range(rng.randint(0, max_x)):
        symbols.insert(rng.randint(0, len(symbols)), "X")
    return "".join(symbols) + "Y" + "b" * n


def state_example(rng: random.Random, max_n: int = 10, n: int | None = None, first: str | None = None) -> str:
    first = rng.choice("AB") if first is None else first
    n = rng.randint(1, max_n) if n is None else n
    return first + "x" * n + "Y" + first.lower()


def copy_example(rng: random.Random, max_n: int = 10, n: int | None = None) -> str:
    n = rng.randint(1, max_n) if n is None else n
    s = "".join(rng.choice(COPY_ALPHABET) for _ in range(n))
    return s + "X" + s


GENERATORS = {
    "counter": counter_example,
    "selective-counter": selective_counter_example,
    "state": state_example,
    "copy": copy_example,
}
# The separator after which the answer is deterministic, per study.
SEPARATORS = {"counter": "X", "selective-counter": "Y", "state": "Y", "copy": "X"}


def split_prompt(study: str, body: str) -> tuple[str, str]:
    """A body → (framed prompt up to its separator, expected generation ending in END)."""
    cut = body.index(SEPARATORS[study]) + 1
    return START + body[:cut], body[cut:] + END


# ----- judges: is a greedy generation after a prompt right? -------------------------------------


def _strip_start(prompt: str) -> str:
    return prompt[1:] if prompt.startswith(START) else prompt


def expected_counter(prompt: str) -> str:
    body = _strip_start(prompt)
    if not body.endswith("X") or set(body[:-1]) - {"a"} or len(body) < 2:
        raise CharlstmError(f"not a counter prompt: {prompt!r}")
    return "b" * (len(body) - 1) + END


def expected_selective_counter(prompt: str) -> str:
    body = _strip_start(prompt)
    if not body.endswith("Y") or set(body[:-1]) - {"a", "X"} or "a" not in body:
        raise CharlstmError(f"not a selective-counter prompt: {prompt!r}")
    return "b" * body.count("a") + END


def expected_state(prompt: str) -> str:
    body = _strip_start(prompt)
    if len(body) < 3 or body[0] not in "AB" or not body.endswith("Y") or set(body[1:-1]) != {"x"}:
        raise CharlstmError(f"not a state prompt: {prompt!r}")
    return body[0].lower() + END


def expected_copy(prompt: str) -> str:
    body = _strip_start(prompt)
    if not body.endswith("X") or len(body) < 2 or set(body[:-1]) - set(COPY_ALPHABET):
        raise CharlstmError(f"not a copy prompt: {prompt!r}")
    return body[:-1] + END


EXPECTED = {
    "counter": expected_counter,
    "selective-counter": expected_selective_counter,
    "state": expected_state,
    "copy": expected_copy,
}


def is_correct(study: str, prompt: str, generated: str) -> bool:
    """True when `generated` (the text after `prompt`, up to and including END) is exactly right."""
    return generated == EXPECTED[study](prompt)


def max_n_correct(per_n: dict[int, bool]) -> int:
    """The largest N such that every N' from 1 to N is right (0 when N = 1 already fails)."""
    best = 0
    for n in sorted(per_n):
        if n != best + 1 or not per_n[n]:
            break
        best = n
    return best
