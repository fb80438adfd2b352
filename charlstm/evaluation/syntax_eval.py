"""The parse rate as a measure of a model: the share of complete top-level units that parse.

N samples are drawn as one batch from a prime, cut into units by the model's language
(syntax.py); the last unit of each sample is left out, since it may have been cut off. The same
seed gives the same samples, so two models (or two ways of drawing) compare on equal terms.
"""

from __future__ import annotations

import time

from ..core.errors import CharlstmError
from ..sampling.syntax import check_language, judge_units

# Primes that start a unit: a function at the top of a module, a member inside a class body.
DEFAULT_PRIMES = {"python": "import os\n\n\ndef ", "java": "public class Example {\n\n    public "}
DEFAULT_SAMPLES = 16
DEFAULT_LENGTH = 2500
DEFAULT_TEMPERATURE = 0.7
SHOWN_FAILURES = 5
MAX_SYNTAX_SAMPLES = 1024


def default_prime(language: str | None) -> str:
    return DEFAULT_PRIMES.get(language or "", "")


def syntax_rate(
    sampler,
    samples: int = DEFAULT_SAMPLES,
    length: int = DEFAULT_LENGTH,
    temperature: float = DEFAULT_TEMPERATURE,
    prime: str | None = None,
    seed: int = 0,
    mode: str = "plain",
    max_tries: int | None = None,
) -> dict:
    """Draw `samples` samples (plain, constrain or valid) and parse their complete units."""
    from ..sampling.sample import SampleSettings

    language = check_language(sampler.language)
    if not 1 <= samples <= MAX_SYNTAX_SAMPLES:
        raise CharlstmError(f"--samples must be between 1 and {MAX_SYNTAX_SAMPLES}, got {samples}")
    if mode not in ("plain", "constrain", "valid"):
        raise CharlstmError(f"unknown drawing mode {mode!r}: plain, constrain or valid")
    prime = default_prime(language) if prime is None else prime
    settings = SampleSettings(
        length=length,
        temperature=temperature,
        prime=prime,
        seed=seed,
        num_samples=samples,
        constrain=mode == "constrain",
        valid=mode == "valid",
    )
    if max_tries is not None:
        settings.max_tries = max_tries
    began = time.perf_counter()
    texts = sampler.sample_texts(settings)
    seconds = time.perf_counter() - began
    judged = [(text, unit, error) for text in texts for unit, error in judge_units(text, language, prime)]
    parsed = sum(error is None for _, _, error in judged)
    failures = [{"unit": text[u.start : u.end], "error": error} for text, u, error in judged if error is not None]
    result = {
        "language": language,
        "mode": mode,
        "samples": samples,
        "length": length,
        "temperature": temperature,
        "prime": prime,
        "seed": seed,
        "units": len(judged),
        "parsed": parsed,
        "rate": parsed / len(judged) if judged else None,
        "seconds": seconds,
        "failures": failures[:SHOWN_FAILURES],
    }
    if mode != "plain":
        stats = sampler.last_stats
        result["unclosed"] = stats.unclosed
        if mode == "valid":
            result.update(
                tries=stats.tries, dropped=stats.dropped, lines_redrawn=stats.lines_redrawn, unfinished=stats.unfinished
            )
    return result
