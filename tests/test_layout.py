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

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "charlstm"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The charlstm modules that `path` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "charlstm":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("charlstm."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("charlstm."))
    return (found & modules) - {path.stem}


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
    paths = sorted(PACKAGE.glob("*.py"))
    modules = {p.stem for p in paths}
    graph = {p.stem: imports_of(p, modules) for p in paths}
    assert cycles(graph) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# The terminal's modules: only they talk to the user, so only they may import rich.
UI_MODULES = {"__main__", "cli", "render"}


def imports_rich(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rich":
            return True
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "rich" for a in node.names):
            return True
    return False


def test_only_the_ui_layer_imports_rich_or_the_ui():
    """Pipeline and analysis modules return data: neither rich nor render.py, cli.py or a
    *_command.py runner, at any depth of their code."""
    paths = sorted(PACKAGE.glob("*.py"))
    modules = {p.stem for p in paths}
    ui = {m for m in modules if m in UI_MODULES or m.endswith("_command")}
    offenders = {}
    for path in paths:
        if path.stem in ui:
            continue
        wrong = sorted(imports_of(path, modules) & ui) + (["rich"] if imports_rich(path) else [])
        if wrong:
            offenders[path.stem] = wrong
    assert offenders == {}


def test_the_ui_check_sees_rich_inside_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def view():\n    from rich.table import Table\n    return Table()\n", encoding="utf-8")
    assert imports_rich(module)
    module.write_text("import richer\n", encoding="utf-8")
    assert not imports_rich(module)


HELP_WITHOUT_TORCH = """
import json, sys
from typer.testing import CliRunner
from charlstm.cli import app
codes = [CliRunner().invoke(app, args).exit_code for args in json.loads(sys.argv[1])]
print(json.dumps({"codes": codes, "heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "numpy"))}))
"""


def test_help_does_not_import_torch():
    asked = [["--help"]] + [[command, "--help"] for command in
                            ("ingest", "train", "eval", "sample", "inspect-neuron", "experiment")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", HELP_WITHOUT_TORCH, json.dumps(asked)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result == {"codes": [0] * len(asked), "heavy": []}


def test_ingest_and_text_inputs_do_not_import_torch():
    code = "import sys, charlstm.ingest, charlstm.userio; print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"



SAMPLING_IMPORTS = """
import sys
import charlstm.sample
print(sorted(m for m in sys.modules if m in ("charlstm.interventions", "charlstm.features") or m.split(".")[0] == "pygments"))
"""


def test_sampling_does_not_import_the_analysis():
    """The sampler is core: its unit specs (--clamp, --ablate, --watch) are units.py's, so it pulls
    in neither the ablation study (interventions.py), the features it ranks by, nor Pygments."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", SAMPLING_IMPORTS], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
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
    assert [line for path in sorted(PACKAGE.glob("*.py")) for line in oversized(path)] == []


def test_the_size_check_finds_a_long_function(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    path = tmp_path / "long.py"
    path.write_text(f"def long():\n{body}\n\ndef short():\n    pass\n", encoding="utf-8")
    assert oversized(path) == [f"long.py: long is {MAX_FUNCTION_LINES + 1} lines"]
