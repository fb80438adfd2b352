"""The README and docs/*.md against the code: every `--flag` they give a command is one of that
command's options, and every relative link (and its #anchor) leads somewhere."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main

from charlstm.cli import app

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# A page about one command: a flag in its prose is that command's, or another command's the prose names.
PAGE_COMMAND = {
    "ingest.md": "ingest",
    "train.md": "train",
    "runs.md": "runs",
    "eval.md": "eval",
    "sample.md": "sample",
    "inspect.md": "inspect-neuron",
    "experiment.md": "experiment",
}

# Flags the pages give to other programs: each must still be in the file that parses it.
OTHER_PROGRAMS = {
    "bench/ingest_speed.py": {"--stdlib"},
    "bench/train_speed.py": {"--quick", "--grid"},
    "bench/sample_speed.py": {"--rounds", "--seconds", "--device"},
    "bench/constrain_speed.py": {"--rounds", "--length"},
    "bench/explorer_speed.py": {"--chars", "--rounds"},
    "bench/intervention_overhead.py": {"--baseline"},
    "bench/inspect_speed.py": {"--compare-threads"},
    "bench/trace_speed.py": {"--big-chars", "--command-chars"},
    "bench/time_to_quality.py": {
        "--data",
        "--budgets",
        "--hidden",
        "--batch-size",
        "--seq-len",
        "--val-chars",
        "--minutes",
        "--precision",
    },
    "bench/gpu_run.py": {"--deadline-minutes", "--java-data", "--out"},
    "Makefile": set(),
}
# Flags of tools outside the project (pip, torchrun, tensorboard, unzip) and the CLI's own.
FOREIGN = {"--index-url", "--nproc-per-node", "--logdir", "--install-completion", "--version", "--help", "--depth"}

FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
INLINE_CODE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def command_options() -> dict[str, set[str]]:
    group = typer.main.get_command(app)
    options = {}
    for name, command in group.commands.items():
        options[name] = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    return options


def split_code(text: str) -> tuple[list[str], str]:
    """The lines of fenced code blocks, with backslash continuations joined, and the prose around them."""
    lines, prose, inside, pending = [], [], False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
            continue
        if not inside:
            prose.append(line)
        else:
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            lines.append(pending + line)
            pending = ""
    return lines, "\n".join(prose)


def invocations(text: str) -> list[tuple[str, list[str]]]:
    """Each `charlstm CMD ARGS` in the page's code blocks and inline code: (CMD, its arguments up
    to a pipe, a redirection or a comment)."""
    found = []
    lines, prose = split_code(text)
    candidates = lines + INLINE_CODE.findall(prose)
    for candidate in candidates:
        for match in re.finditer(r"(?:^|[\s$(])(?:charlstm|-m charlstm) ([a-z-]+)(.*)", candidate):
            command, rest = match.group(1), match.group(2)
            rest = re.split(r"\s(?:\||&&|;|>|2>|<)\s", rest)[0]
            try:
                words = shlex.split(rest, comments=True)
            except ValueError:  # an inline span that quotes only part of a command
                words = rest.split()
            found.append((command, words))
    return found


def wrong_flags(text: str, options: dict[str, set[str]]) -> list[str]:
    wrong = []
    for command, words in invocations(text):
        if command not in options:
            continue  # `charlstm` followed by a word that is not a command: a path, prose
        for word in words:
            flag = word.split("=")[0]
            if re.fullmatch(r"--?[A-Za-z][\w-]*", flag) and flag not in options[command]:
                wrong.append(f"charlstm {command} {flag}")
    return wrong


def test_every_flag_given_to_a_command_is_one_of_its_options():
    options = command_options()
    assert [f"{page.name}: {w}" for page in PAGES for w in wrong_flags(page.read_text(encoding="utf-8"), options)] == []


def test_the_flag_check_sees_a_wrong_flag_in_a_block_and_inline():
    text = (
        "```bash\ncharlstm train --data d \\\n    --no-such 3   # --also-not-checked\n```\n"
        "and `charlstm eval RUN --threads 1 | head --lines 3`, `charlstm sample -t 0.7 -Q`"
    )
    assert wrong_flags(text, command_options()) == [
        "charlstm train --no-such",
        "charlstm eval --threads",
        "charlstm sample -Q",
    ]


def test_every_flag_in_the_prose_exists_where_the_page_says():
    options = command_options()
    every = set().union(*options.values())
    other = {flag for flags in OTHER_PROGRAMS.values() for flag in flags}
    wrong = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        own = options.get(PAGE_COMMAND.get(page.name, ""), set())
        for flag in set(FLAG.findall(text)):
            if flag not in own and flag not in every and flag not in other and flag not in FOREIGN:
                wrong.append(f"{page.name}: {flag}")
    assert sorted(wrong) == []


@pytest.mark.parametrize("program", sorted(OTHER_PROGRAMS))
def test_the_other_programs_still_parse_the_flags_the_pages_give_them(program):
    source = (REPO / program).read_text(encoding="utf-8")
    # time_to_quality.py makes its shape's flags from SHAPE's keys (batch_size=64 → --batch-size)
    parsed = [
        flag
        for flag in sorted(OTHER_PROGRAMS[program])
        if f'"{flag}"' in source or f"{flag[2:].replace('-', '_')}=" in source
    ]
    assert parsed == sorted(OTHER_PROGRAMS[program])


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped but hyphens, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = "\n".join(line for line in page.read_text(encoding="utf-8").splitlines())
    inside, found = False, set()
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif not inside and re.match(r"#+ ", line):
            found.add(slug(line.lstrip("#")))
    return found


def test_every_relative_link_leads_to_a_file_and_its_anchor():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            where = (page.parent / path).resolve() if path else page
            if not where.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and where.suffix == ".md" and anchor not in anchors(where):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_the_readme_stays_short_and_keeps_the_two_commands():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 300
    assert "make demo" in readme and "make test" in readme


def test_the_slug_follows_github():
    assert slug(" Steering a sample: `--clamp`, `--ablate`, `--watch`") == "steering-a-sample---clamp---ablate---watch"
    assert slug("The prepared GPU run: `bench/gpu_run.py`") == "the-prepared-gpu-run-benchgpu_runpy"


def test_every_code_block_is_closed():
    """A fence left open swallows the rest of a page (and the flags and links in it)."""
    assert [
        page.name
        for page in PAGES
        if sum(1 for line in page.read_text(encoding="utf-8").splitlines() if line.lstrip().startswith("```")) % 2
    ] == []


def test_every_file_of_the_project_the_pages_name_exists():
    """`charlstm/core/engine.py`, `bench/gpu_run.py`, `tests/test_beam.py`: a module moved or renamed
    leaves the pages pointing nowhere."""
    named = re.compile(
        r"(?<![\w/.-])((?:charlstm|bench|scripts|tests|docs)/[\w./-]+\.(?:py|sh|svg|png|md|html|css|js))\b"
    )
    missing = sorted(
        {
            f"{page.name}: {path}"
            for page in PAGES
            for path in named.findall(page.read_text(encoding="utf-8"))
            if not (REPO / path).exists()
        }
    )
    assert missing == []
