"""Does every command give the same answers on the GPU as on the CPU? One JSON line on stdout.

For a CUDA machine (a part of bench/gpu_run.py); on a CPU it compares the CPU with itself, which
proves the script. Checks, each timed:
- trace: every signal of every unit over 2,000 characters of the model's validation excerpt, on
  `--device` (float32 weights) against the CPU (`--exact`): the largest difference per signal
  (TF32 matrix products, were they on, would show here as ~1e-3 rather than ~1e-5);
- inspect: `inspect-neuron --find indent --json` and `--ablate 1:5 --json` on both devices (the
  same top units; Δbpc within 1e-3);
- lanes: `--find indent` over 200,000 characters, traced in lanes (`lane_chunks`: chunks on the
  device, results back to the CPU) on the device and on the CPU: the same top units to three
  decimals, how closely the lanes joined, and characters per second on each;
- experiment: `experiment counter --steps 200 --seed 5 --json` on the device and on the CPU (into
  a scratch folder), whether the results agree, and the seconds each took;
- crossing: a model that `--gpu-model` names (e.g. one just trained on the GPU) sampled and
  scored with `--device cpu`.
After each check the record so far is printed as one JSON line on stdout (the last line is the
whole record); checks that would start after --deadline-s are skipped. Exit status 0 when every
check that ran passed.

    python bench/device_check.py [--checkpoint PATH] [--gpu-model PATH] [--deadline-s S]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TRACE_TOLERANCE = 1e-3  # float32 on both sides; anything near this means TF32 or a wrong path


def charlstm(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    t = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "charlstm", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    return done, round(time.perf_counter() - t, 2)


def as_json(done: subprocess.CompletedProcess):
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:] or done.stdout[-200:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_trace(checkpoint: str, device: str) -> dict:
    from charlstm.analysis.neurons import open_checkpoint
    from charlstm.analysis.tracing import activations

    here = open_checkpoint(checkpoint, device=device)
    cpu = open_checkpoint(checkpoint, device="cpu", exact=True)
    text = (here.path.parent / "val-excerpt.txt").read_text(encoding="utf-8")[:2000]
    t = time.perf_counter()
    ours = activations(here.model, here.vocab, text, exact=True)
    seconds = time.perf_counter() - t
    ref = activations(cpu.model, cpu.vocab, text, exact=True)
    diff = {name: float(abs(ours[name] - ref[name]).max()) for name in ours}
    return {"ok": max(diff.values()) < TRACE_TOLERANCE, "max_abs_diff": diff, "seconds": round(seconds, 2)}


def check_lanes(checkpoint: str, device: str, chars: int = 200_000) -> dict:
    """--find over a corpus in lanes (`lane_chunks`) on the device against the CPU: the same top units."""
    from charlstm.analysis.neurons import find_units, open_checkpoint

    here = open_checkpoint(checkpoint, device=device)
    cpu = open_checkpoint(checkpoint, device="cpu")
    excerpt = (here.path.parent / "val-excerpt.txt").read_text(encoding="utf-8")
    text = (excerpt * (chars // len(excerpt) + 1))[:chars]
    seconds, found = {}, {}
    for name, inspection in (("device", here), ("cpu", cpu)):
        t = time.perf_counter()
        found[name] = find_units(inspection, text, "indent")
        seconds[name] = round(time.perf_counter() - t, 2)
    units = {name: [(u.layer, u.neuron, u.signal, round(u.score, 3)) for u in f.units] for name, f in found.items()}
    return {
        "ok": units["device"] == units["cpu"],
        "lanes": found["device"].lanes.to_dict() if found["device"].lanes else None,
        "top": units["device"][:3],
        "chars_per_s": {name: round(chars / s) for name, s in seconds.items()},
        "seconds": seconds,
    }


def check_inspect(checkpoint: str, device: str) -> dict:
    results = {}
    for name, args in {
        "find_indent": ["--find", "indent", "--from-val", "3000"],
        "ablate": ["--ablate", "1:5", "--from-val", "3000"],
    }.items():
        ours, t_ours = charlstm("inspect-neuron", checkpoint, *args, "--json", "--device", device)
        cpu, t_cpu = charlstm("inspect-neuron", checkpoint, *args, "--json", "--device", "cpu", "--exact")
        results[name] = {"device": as_json(ours), "cpu": as_json(cpu), "seconds": {"device": t_ours, "cpu": t_cpu}}
    top = lambda r: [(u["layer"], u["neuron"], u["signal"]) for u in r["neurons"]][:5]  # noqa: E731
    same_top = top(results["find_indent"]["device"]) == top(results["find_indent"]["cpu"])
    delta = lambda r: r["ablations"][0]["delta"]["all"]  # noqa: E731
    ablate_diff = abs(delta(results["ablate"]["device"]) - delta(results["ablate"]["cpu"]))
    return {
        "ok": same_top and ablate_diff < 1e-3,
        "same_top_units": same_top,
        "ablate_delta_bpc_diff": ablate_diff,
        "seconds": {k: v["seconds"] for k, v in results.items()},
    }


def check_experiment(device: str, scratch: str) -> dict:
    args = ["experiment", "counter", "--steps", "200", "--seed", "5", "--quiet", "--json"]
    ours, t_ours = charlstm(*args, "--device", device, "--out-dir", f"{scratch}/device", timeout=300)
    cpu, t_cpu = charlstm(*args, "--device", "cpu", "--out-dir", f"{scratch}/cpu", timeout=300)
    a, c = as_json(ours), as_json(cpu)

    def strip(r: dict) -> str:
        return json.dumps(
            {k: v for k, v in r.items() if k not in ("train_seconds", "device", "seconds", "run")},
            sort_keys=True,
            default=str,
        )

    # Both ran and reported; equal results are reported, not required (GPU kernels need not match the CPU's bits).
    return {"ok": True, "same_as_cpu": strip(a) == strip(c), "seconds": {"device": t_ours, "cpu": t_cpu}}


def check_crossing(model: str) -> dict:
    sample, t_sample = charlstm("sample", model, "-n", "200", "--seed", "1", "--device", "cpu")
    excerpt = Path(model) / "val-excerpt.txt" if Path(model).is_dir() else Path(model).parent / "val-excerpt.txt"
    score, t_eval = charlstm("eval", model, "--text-file", str(excerpt), "--device", "cpu", "--json", timeout=300)
    ok = sample.returncode == 0 and score.returncode == 0
    return {
        "ok": ok,
        "sample_chars": len(sample.stdout),
        "eval": as_json(score) if ok else score.stderr[-300:],
        "seconds": {"sample": t_sample, "eval": t_eval},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "pretrained-python"))
    parser.add_argument("--gpu-model", default=None, help="a GPU-trained model to sample and score on the CPU")
    parser.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    parser.add_argument("--deadline-s", type=float, default=None, help="skip the checks that would start after this")
    args = parser.parse_args()
    import torch

    start = time.monotonic()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    scratch = tempfile.TemporaryDirectory(prefix="device_check-")
    checks = {
        "trace": lambda: check_trace(args.checkpoint, device),
        "inspect": lambda: check_inspect(args.checkpoint, device),
        "lanes": lambda: check_lanes(args.checkpoint, device),
        "experiment": lambda: check_experiment(device, scratch.name),
    }
    if args.gpu_model:
        checks["crossing"] = lambda: check_crossing(args.gpu_model)
    record = {"device": device}
    for name, check in checks.items():
        if args.deadline_s is not None and time.monotonic() - start > args.deadline_s:
            record[name] = {"ok": True, "skipped": f"past --deadline-s {args.deadline_s:g}"}
            continue
        try:
            record[name] = check()
        except Exception as exc:  # noqa: BLE001 — one check's failure must not hide the others
            record[name] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        print(f"[device_check] {name}: {'ok' if record[name]['ok'] else 'FAILED'}", file=sys.stderr, flush=True)
        print(json.dumps(record), flush=True)  # the record so far: a timeout still leaves what ran
    scratch.cleanup()
    record["ok"] = all(record[name]["ok"] for name in checks)
    print(json.dumps(record), flush=True)
    sys.exit(0 if record["ok"] else 1)


if __name__ == "__main__":
    main()
