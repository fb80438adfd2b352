"""How long a command takes to start: each in a fresh process, against importing torch alone.

    .venv/bin/python bench/startup.py [--rounds 5]

Runs `python -c "import torch"` and three short commands on the shipped model (`sample --length 1`,
`eval` of a 300-character text, `inspect-neuron` colouring one neuron over the same text), each
--rounds times, interleaved (the machine is shared), and prints the median wall time of each and
what it adds to torch's import: the cost of charlstm's own start (its imports, opening the
checkpoint, building the model) plus the few characters' work.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "pretrained-python"
TEXT = "def greet(name):\n    return 'hello, ' + name\n\n\nclass Point:\n    def __init__(self, x, y):\n" * 3


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "short.py"
        text.write_text(TEXT, encoding="utf-8")
        charlstm = [sys.executable, "-m", "charlstm"]
        commands = {
            "import torch": [sys.executable, "-c", "import torch"],
            "sample --length 1": [*charlstm, "sample", str(SHIPPED), "--length", "1", "--seed", "1"],
            "eval, 300 chars": [*charlstm, "eval", str(SHIPPED), "--text-file", str(text)],
            "inspect-neuron -l 1 -n 59": [*charlstm, "inspect-neuron", str(SHIPPED), "--text-file", str(text)]
            + ["-l", "1", "-n", "59"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                times[name].append(wall(command))
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians["import torch"]
    print(f"median of {args.rounds} fresh processes each, interleaved:")
    for name, seconds in medians.items():
        extra = "" if name == "import torch" else f"   (+{seconds - base:.2f} s over importing torch)"
        print(f"  {name:28s} {seconds:5.2f} s{extra}")


if __name__ == "__main__":
    main()
