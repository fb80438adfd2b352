"""End-to-end check on a CUDA machine (a few minutes), runnable on a CPU in a shortened form.

Ingests the default corpus (the Python standard library; built directly from it if `charlstm
ingest` fails), trains a 3×512 LSTM for a fixed number of steps in bf16, fp16 and fp32 (on a CPU: a
small model, in the precisions the CPU runs), checks that the loss falls with no NaN, reports chars/s
and the LSTM's dtype under autocast for each, then saves, resumes, evaluates and samples once.
Everything goes through the `charlstm` command line, as a user would run it. Prints one JSON
summary on stdout; progress goes to stderr. Exit status 0 when every check passed.

    bash bench/gpu_check.sh [--steps N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from charlstm.core.backend import cpu_runs_bf16_rnn  # noqa: E402


def say(message: str) -> None:
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


def charlstm(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "charlstm", *args]
    say("$ charlstm " + " ".join(args))
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def last_json(stdout: str) -> dict | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def build_dataset(work: Path, cpu: bool) -> tuple[Path, str]:
    """The default corpus via `charlstm ingest`; else straight from the stdlib with write_dataset."""
    data_dir = work / "data"
    done = charlstm("ingest", "--name", "python-stdlib", "--data-dir", str(data_dir), "--json", timeout=300)
    if done.returncode == 0:
        return data_dir / "python-stdlib", "charlstm ingest"
    say(f"ingest failed ({done.stderr.strip()[-300:]}); building the dataset from the stdlib directly")
    from charlstm.core.vocab import Vocab
    from charlstm.corpus.dataset import write_dataset

    budget = 2_000_000 if cpu else 20_000_000
    texts, n = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "test" in path.parts:
            continue
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
        n += len(texts[-1])
        if n > budget:
            break
    split = int(len(texts) * 0.95)
    train_text, val_text = "\x1c".join(texts[:split]), "\x1c".join(texts[split:])
    counts: dict[str, int] = {}
    for ch in train_text + val_text:
        counts[ch] = counts.get(ch, 0) + 1
    vocab = Vocab.from_counts(counts, min_count=5)
    path = data_dir / "python-stdlib-direct"
    write_dataset(path, vocab, vocab.encode(train_text), vocab.encode(val_text), {"language": "python"})
    return path, "write_dataset (stdlib .py files)"


def metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps per precision (CUDA 300, CPU 30)")
    parser.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    start = time.perf_counter()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if cuda:
        shape = ["--layers", "3", "--hidden", "512", "--embed", "64", "--batch-size", "64", "--seq-len", "128"]
        steps = args.steps or 300
        precisions = ["bf16", "fp16", "fp32"]
    else:
        say("no CUDA GPU: running the shortened CPU version (small model, CPU precisions)")
        shape = ["--layers", "3", "--hidden", "64", "--embed", "32", "--batch-size", "16", "--seq-len", "64"]
        steps = args.steps or 30
        precisions = ["bf16", "fp32"] if cpu_runs_bf16_rnn("lstm") else ["fp32"]
    summary: dict = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "bf16_supported": torch.cuda.is_bf16_supported() if cuda else None,
        "steps_per_run": steps,
        "model": " ".join(shape),
        "runs": {},
    }
    checks: dict[str, bool] = {}
    work_ctx = tempfile.TemporaryDirectory() if args.keep is None else None
    work = Path(args.keep or work_ctx.name)
    work.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        data, how = build_dataset(work, cpu=not cuda)
        meta = json.loads((data / "meta.json").read_text())
        summary["dataset"] = {
            "built_by": how,
            "train_chars": meta["train_chars"],
            "val_chars": meta["val_chars"],
            "vocab_size": len(meta["vocab"]),
            "seconds": round(time.perf_counter() - t, 1),
        }

        # Train in each precision.
        for precision in precisions:
            run = work / f"run-{precision}"
            done = charlstm(
                "train",
                "--data",
                str(data),
                "--out",
                str(run),
                *shape,
                "--steps",
                str(steps),
                "--eval-every",
                str(steps),
                "--log-every",
                "10",
                "--precision",
                precision,
                "--device",
                device,
                "--force",
                "--json",
            )
            result = last_json(done.stdout) if done.returncode == 0 else None
            if result is None:
                summary["runs"][precision] = {"ok": False, "error": done.stderr.strip()[-500:]}
                checks[f"train_{precision}"] = False
                continue
            rows = metrics(run)
            losses = [r["loss"] for r in rows]
            head, tail = losses[: max(1, len(losses) // 5)], losses[-max(1, len(losses) // 5) :]
            finite = all(math.isfinite(x) for x in losses)
            fell = finite and sum(tail) / len(tail) < sum(head) / len(head) - 0.1
            speeds = [r["chars_per_sec"] for r in rows[1:]] or [r["chars_per_sec"] for r in rows]
            summary["runs"][precision] = {
                "ok": fell,
                "rnn_dtype_under_autocast": result["rnn_dtype"],
                "chars_per_sec": round(sorted(speeds)[len(speeds) // 2]),  # median over log intervals
                "first_loss": round(head[0], 4),
                "last_loss": round(tail[-1], 4),
                "loss_fell": fell,
                "no_nan": finite,
                "val_bpc": result["val_bpc"],
                "skipped_steps": result.get("skipped_steps"),
                "seconds": result["seconds"],
            }
            checks[f"train_{precision}"] = fell
            say(f"{precision}: {summary['runs'][precision]}")

        # Save (done above), resume, evaluate and sample on the last run that trained.
        trained = [p for p in precisions if summary["runs"].get(p, {}).get("ok")]
        if trained:
            precision = trained[0]
            run = work / f"run-{precision}"
            done = charlstm("train", "--out", str(run), "--resume", "--steps", str(steps + 20), "--json")
            resumed = last_json(done.stdout) if done.returncode == 0 else None
            ok = resumed is not None and resumed["steps"] == steps + 20
            summary["resume"] = {
                "ok": ok,
                "from_step": steps,
                "to_step": resumed and resumed["steps"],
                "val_bpc": resumed and resumed["val_bpc"],
                "error": None if ok else done.stderr.strip()[-500:],
            }
            checks["resume"] = ok

            done = charlstm("eval", str(run / "latest.pt"), "--json")
            scored = last_json(done.stdout) if done.returncode == 0 else None
            agrees = scored is not None and resumed is not None and abs(scored["bpc"] - resumed["val_bpc"]) < 2e-3
            summary["eval"] = {
                "ok": agrees,
                "bpc": scored and scored["bpc"],
                "chars": scored and scored["chars"],
                "chars_per_sec": scored and scored.get("chars_per_sec"),
                "error": None if scored else done.stderr.strip()[-500:],
            }
            checks["eval"] = agrees

            done = charlstm("sample", str(run), "--length", "300", "--seed", "1", "--temperature", "0.8", "--no-color")
            if done.returncode == 0:
                summary["sample"] = {"ok": bool(done.stdout), "text": done.stdout[:300]}
                checks["sample"] = bool(done.stdout)
            else:  # built separately; its absence is reported, not failed
                summary["sample"] = {"ok": None, "error": done.stderr.strip()[-300:]}
    finally:
        if work_ctx is not None:
            work_ctx.cleanup()
    summary["checks"] = checks
    summary["ok"] = bool(checks) and all(checks.values())
    summary["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(summary))
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
