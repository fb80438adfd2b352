#!/usr/bin/env bash
# One command for a CUDA machine (under 5 minutes): ingest the default corpus, train a 3×512 LSTM
# in bf16, fp16 and fp32, check the loss falls with no NaN, report chars/s and the LSTM's dtype
# under autocast, then save, resume, evaluate and sample; one JSON summary on stdout.
# Without CUDA it runs a shortened CPU version (small model) so the script itself can be checked.
#
#   bash bench/gpu_check.sh [--steps N] [--keep DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" bench/gpu_check.py "$@"
