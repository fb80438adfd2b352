"""The package's shape: no module imports, directly or through others, one that imports it back;
and the CLI's help comes without importing torch.

Every `import` counts, those inside function bodies too: an import moved into a function to dodge
a cycle is still a cycle.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "charlstm"

# The layers, lowest first: a module may import its own layer and the layers before it, never one
# after. The package's top level (the CLI and `python -m charlstm`) comes last.
LAYERS = ("core", "corpus", "sampling", "evaluation", "training", "analysis", "ui", "")
MAX_TOP_LEVEL_MODULES = 8


def module_name(path: Path) -> str:
    """`charlstm/core/model.py` -> `core.model`; `charlstm/cli.py` -> `cli`."""
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def layer_of(module: str) -> str:
    return module.split(".")[0] if "." in module else ""


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "__init__.py"}


def imports_of(path: Path, modules) -> set[str]:
    """The charlstm modules that `path` imports (relative or absolute), at any depth of its code."""
    here = module_name(path).split(".")[:-1]  # the package `path` lives in, below charlstm
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "charlstm":
                base = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:  # `from .core import model` names a module; `from .core.model import X` does not
                candidate = ".".join(base + [alias.name])
                found.add(candidate if candidate in modules else ".".join(base))
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith("charlstm."))
    return (found & set(modules)) - {module_name(path)}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_even_inside_functions():
    modules = package_modules()
    graph = {name: imports_of(path, modules) for name, path in modules.items()}
    assert cycles(graph) == []


def test_each_layer_imports_only_itself_and_the_layers_below():
    modules = package_modules()
    upward = {
        name: sorted(m for m in imports_of(path, modules) if LAYERS.index(layer_of(m)) > LAYERS.index(layer_of(name)))
        for name, path in modules.items()
    }
    assert {name: wrong for name, wrong in upward.items() if wrong} == {}


def test_every_module_lives_in_a_layer_and_the_top_level_stays_small():
    modules = package_modules()
    assert {layer_of(m) for m in modules} <= set(LAYERS)
    top_level = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top_level) <= MAX_TOP_LEVEL_MODULES, top_level


def missing_imports(path: Path, repo: Path = REPO) -> list[str]:
    """The charlstm modules `path` imports (relative or absolute, at any depth) that do not exist."""
    here = path.relative_to(repo).with_suffix("").parts[:-1]  # ("charlstm", "ui") for charlstm/ui/x.py
    missing = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            parts = list(here[: len(here) - (node.level - 1)]) + (node.module.split(".") if node.module else [])
        elif node.module and node.module.split(".")[0] == "charlstm":
            parts = node.module.split(".")
        else:
            continue
        target = repo.joinpath(*parts)
        if target.with_suffix(".py").is_file():
            continue
        if not (target / "__init__.py").is_file():
            missing.append(f"{path.name}:{node.lineno} {'.'.join(parts)}")
            continue
        init = (target / "__init__.py").read_text(encoding="utf-8")
        for alias in node.names:  # from a package: a module of it, or a name its __init__ defines
            if not (target / f"{alias.name}.py").is_file() and not (target / alias.name).is_dir():
                if f"{alias.name} =" not in init:
                    missing.append(f"{path.name}:{node.lineno} {'.'.join(parts)}.{alias.name}")
    return missing


def test_every_charlstm_import_names_a_module_that_exists():
    """A module moved or renamed leaves no import behind, not even one inside a function body."""
    assert [m for path in sorted(PACKAGE.rglob("*.py")) for m in missing_imports(path)] == []


def test_the_missing_import_check_finds_one(tmp_path):
    assert missing_imports(PACKAGE / "ui" / "render.py") == []
    for package in ("charlstm", "charlstm/core", "charlstm/ui"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text('__version__ = "0"\n' if package == "charlstm" else "")
    (tmp_path / "charlstm/core/errors.py").write_text("")
    stale = tmp_path / "charlstm/ui/stale.py"
    stale.write_text(
        "from ..core.errors import x\nfrom .. import __version__\n"
        "def table():\n    from charlstm.errors import shown_path\n    from ..core import nothing_here\n"
    )
    assert missing_imports(stale, tmp_path) == ["stale.py:4 charlstm.errors", "stale.py:5 charlstm.core.nothing_here"]


def test_the_import_reader_resolves_relative_imports(tmp_path):
    modules = package_modules()
    assert imports_of(PACKAGE / "core" / "checkpoint.py", modules) >= {"core.model", "core.vocab"}
    assert "ui.sample_cli" in imports_of(PACKAGE / "cli.py", modules)  # `from .ui import sample_cli`
    assert {"ui.sample_command", "core.checkpoint"} <= imports_of(PACKAGE / "ui" / "sample_cli.py", modules)
    reader = imports_of(PACKAGE / "ui" / "render.py", modules)
    assert reader and all(m in modules for m in reader)


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# The terminal's modules: only they talk to the user. The library hands what it has to say to a
# listener as events (charlstm/core/events.py); ui/terminal.py draws them, the *_command modules print.
TERMINAL_PACKAGES = ("rich", "tqdm")
STDERR = ("stderr", "__stderr__")


def is_ui(module: str) -> bool:
    return layer_of(module) in ("ui", "")


def terminal_uses(path: Path) -> list[str]:
    """What in `path`'s code reaches the terminal, at any depth: rich or tqdm imported, sys.stderr, print."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names if a.name.split(".")[0] in TERMINAL_PACKAGES)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in TERMINAL_PACKAGES:
                found.add(node.module.split(".")[0])
            elif node.module == "sys" and any(a.name in STDERR for a in node.names):
                found.add("sys.stderr")
        elif isinstance(node, ast.Attribute) and node.attr in STDERR:
            if isinstance(node.value, ast.Name) and node.value.id == "sys":
                found.add("sys.stderr")
        elif isinstance(node, ast.Name) and node.id == "print":  # called, or handed on as a callback
            found.add("print")
    return sorted(found)


def test_only_the_ui_layer_talks_to_the_terminal_or_imports_the_ui():
    """Library modules return data and send events: neither rich, tqdm, sys.stderr nor print, nor a
    module of the ui layer or the top level, at any depth of their code."""
    modules = package_modules()
    offenders = {}
    for name, path in modules.items():
        if is_ui(name):
            continue
        wrong = sorted(m for m in imports_of(path, modules) if is_ui(m)) + terminal_uses(path)
        if wrong:
            offenders[name] = wrong
    assert offenders == {}


@pytest.mark.parametrize(
    "code, found",
    [
        ("def view():\n    from rich.table import Table\n    return Table()\n", ["rich"]),
        ("import tqdm.auto\n", ["tqdm"]),
        ("import sys\n\ndef warn(m):\n    sys.stderr.write(m)\n", ["sys.stderr"]),
        ("from sys import stderr\n", ["sys.stderr"]),
        ("def say(m):\n    print(m, flush=True)\n", ["print"]),
        ("def run(on_event=print):\n    pass\n", ["print"]),
        ("import richer\nimport tqdm_like\n", []),
        ("def git(proc):\n    return proc.stderr  # print(it)\n", []),
        ("def show(console):\n    console.print('x')\n", []),
    ],
)
def test_the_terminal_check_sees_each_way_to_the_terminal(tmp_path, code, found):
    module = tmp_path / "m.py"
    module.write_text(code, encoding="utf-8")
    assert terminal_uses(module) == found


HELP_WITHOUT_TORCH = """
import json, sys
from typer.testing import CliRunner
from charlstm.cli import app
codes = [CliRunner().invoke(app, args).exit_code for args in json.loads(sys.argv[1])]
print(json.dumps({"codes": codes, "heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "numpy"))}))
"""


def test_help_does_not_import_torch():
    commands = ("ingest", "train", "runs", "eval", "sample", "inspect-neuron", "experiment")
    asked = [["--help"]] + [[command, "--help"] for command in commands]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", HELP_WITHOUT_TORCH, json.dumps(asked)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result == {"codes": [0] * len(asked), "heavy": []}


def test_ingest_and_text_inputs_do_not_import_torch():
    code = "import sys, charlstm.corpus.ingest, charlstm.core.userio; print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


SAMPLING_IMPORTS = """
import sys
import charlstm.sampling.sample
analysis = ("charlstm.analysis.interventions", "charlstm.analysis.features")
print(sorted(m for m in sys.modules if m in analysis or m.split(".")[0] == "pygments"))
"""


def test_sampling_does_not_import_the_analysis():
    """The sampler is core: its unit specs (--clamp, --ablate, --watch) are units.py's, so it pulls
    in neither the ablation study (interventions.py), the features it ranks by, nor Pygments."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", SAMPLING_IMPORTS], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# Every module is held to these: a module that outgrows them is two rooms, a function two steps.
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def oversized(path: Path) -> list[str]:
    """`path` if it is longer than MAX_MODULE_LINES, and each function in it longer than MAX_FUNCTION_LINES."""
    text = path.read_text(encoding="utf-8")
    found = [f"{path.name}: {len(text.splitlines())} lines"] if len(text.splitlines()) > MAX_MODULE_LINES else []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{path.name}: {node.name} is {length} lines")
    return found


def test_every_module_stays_within_the_size_limits():
    assert [line for path in sorted(PACKAGE.rglob("*.py")) for line in oversized(path)] == []


def test_the_size_check_finds_a_long_function(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    path = tmp_path / "long.py"
    path.write_text(f"def long():\n{body}\n\ndef short():\n    pass\n", encoding="utf-8")
    assert oversized(path) == [f"long.py: long is {MAX_FUNCTION_LINES + 1} lines"]
