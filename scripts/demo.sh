#!/usr/bin/env bash
# The whole story on the embedded default corpus: ingest, (later) train, sample, inspect.
set -euo pipefail
PY=${PY:-.venv/bin/python}
DEMO_DATA=${DEMO_DATA:-data/python-stdlib}
name=$(basename "$DEMO_DATA")
data_dir=$(dirname "$DEMO_DATA")

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }

step "Ingesting the Python standard library into $DEMO_DATA"
if [ -f "$DEMO_DATA/meta.json" ]; then
  echo "dataset already there (delete it or use --force to rebuild)" >&2
else
  "$PY" -m charlstm ingest --preset python-stdlib --name "$name" --data-dir "$data_dir"
fi
