#!/usr/bin/env bash
# Per-frame layout from the blurred clips (see preprocess/frame_extraction.py).
#   RATIO=0.5 ./run_frame_extraction.sh                 # keep half of each clip (one contiguous run)
#   SAMPLING=uniform RATIO=0.3 ./run_frame_extraction.sh --split train
#   ./run_frame_extraction.sh --source composed         # the all-in-focus control under <root>/frames_sharp
# Environment: RATIO (default 1.0), SAMPLING (contiguous|uniform), SEED (0), ROOT (data/demo), PYTHON,
# RETRIES (restarts of a crashed worker, default 3). Other flags pass through. The worker is resumable, so a
# restart redoes only unfinished clips; an error the user must fix (exit 1) is not retried.
set -uo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
RETRIES="${RETRIES:-3}"
args=(--root "${ROOT:-data/demo}" --ratio "${RATIO:-1.0}" --sampling "${SAMPLING:-contiguous}" --seed "${SEED:-0}" "$@")
for attempt in $(seq 1 "$RETRIES") last; do
    "$PYTHON" preprocess/frame_extraction.py "${args[@]}"
    rc=$?
    if [ "$rc" -eq 0 ] || [ "$rc" -eq 1 ] || [ "$rc" -eq 2 ] || [ "$rc" -eq 130 ] || [ "$attempt" = last ]; then
        exit "$rc"
    fi
    echo "run_frame_extraction: worker exited with $rc; restarting ($attempt/$RETRIES)" >&2
done
