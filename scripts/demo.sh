#!/usr/bin/env bash
# The whole story on the embedded default corpus: ingest, train, sample, find a neuron.
# Knobs (environment): DEMO_MINUTES (training time), DEMO_HIDDEN, DEMO_LAYERS, DEMO_BATCH, DEMO_SEQ,
# DEMO_LR, DEMO_DATA, DEMO_RUN.
set -euo pipefail
PY=${PY:-.venv/bin/python}
DEMO_DATA=${DEMO_DATA:-data/python-stdlib}
DEMO_RUN=${DEMO_RUN:-checkpoints/demo}
DEMO_MINUTES=${DEMO_MINUTES:-3}
DEMO_LAYERS=${DEMO_LAYERS:-3}
# A GPU trains a full-size model in the same time. A CPU gets a smaller one on shorter, smaller
# batches at a higher learning rate: in 2 minutes on 2 cores that reached 2.47 validation bpc where
# 3x256 on the default 64x128 batches was still at 4.2 after 3.
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  DEMO_HIDDEN=${DEMO_HIDDEN:-512} DEMO_BATCH=${DEMO_BATCH:-64} DEMO_SEQ=${DEMO_SEQ:-128} DEMO_LR=${DEMO_LR:-2e-3}
else
  DEMO_HIDDEN=${DEMO_HIDDEN:-128} DEMO_BATCH=${DEMO_BATCH:-32} DEMO_SEQ=${DEMO_SEQ:-64} DEMO_LR=${DEMO_LR:-4e-3}
fi
charlstm() { "$PY" -m charlstm "$@"; }
step() { printf '\n\033[1;36m==> %s\033[0m\n' "$*" >&2; }

step "1/4 Ingest: the Python standard library becomes $DEMO_DATA"
if [ -f "$DEMO_DATA/meta.json" ]; then
  echo "already ingested (rebuild with: charlstm ingest --force)" >&2
else
  charlstm ingest --preset python-stdlib --name "$(basename "$DEMO_DATA")" --data-dir "$(dirname "$DEMO_DATA")"
fi

step "2/4 Train: a ${DEMO_LAYERS}x${DEMO_HIDDEN} LSTM for ${DEMO_MINUTES} minutes (DEMO_MINUTES to change)"
if [ -f "$DEMO_RUN/latest.pt" ]; then
  charlstm train --data "$DEMO_DATA" --out "$DEMO_RUN" --resume --minutes "$DEMO_MINUTES" --eval-every 0
else
  charlstm train --data "$DEMO_DATA" --out "$DEMO_RUN" --layers "$DEMO_LAYERS" --hidden "$DEMO_HIDDEN" \
    --batch-size "$DEMO_BATCH" --seq-len "$DEMO_SEQ" --lr "$DEMO_LR" --minutes "$DEMO_MINUTES" --eval-every 0
fi

step "3/4 Sample: 600 characters at temperature 0.6, streamed as they are generated"
charlstm sample "$DEMO_RUN" --prime $'import os\n\n\nclass ' --length 600 --temperature 0.6 --seed 0
echo

if [ -f checkpoints/pretrained-python/best.pt ]; then
  step "3/4 (for comparison) the shipped model, trained longer on the same corpus"
  charlstm sample checkpoints/pretrained-python --prime $'import os\n\n\nclass ' --length 600 --temperature 0.6 --seed 0
  echo
fi

step "4/4 Inspect: the neuron that best tracks indentation over validation code, shown on a function"
found=$(charlstm inspect-neuron "$DEMO_RUN" --find indent --top 5 --json)
read -r layer neuron signal < <(printf '%s' "$found" | "$PY" -c \
  "import json, sys; n = json.load(sys.stdin)['neurons'][0]; print(n['layer'], n['neuron'], n['signal'])")
charlstm inspect-neuron "$DEMO_RUN" --layer "$layer" --neuron "$neuron" --state "$signal" --text-file docs/parse.py
charlstm inspect-neuron "$DEMO_RUN" --html "$DEMO_RUN/explorer.html" --chars 1200

cat >&2 <<MSG

Done. To go further:
  charlstm sample $DEMO_RUN --prime "class " --temperature 0.8     # more code
  charlstm inspect-neuron $DEMO_RUN --find string                 # neurons for strings, comments, brackets...
  open $DEMO_RUN/explorer.html                                     # the explorer in a browser
  charlstm train --data $DEMO_DATA --out $DEMO_RUN --resume --minutes 30   # keep training
  charlstm experiment all                                          # the counting neurons of the article
MSG
