#!/usr/bin/env bash
# Per-frame layout from the blurred clips (see preprocess/frame_extraction.py).
#   RATIO=0.5 ./run_frame_extraction.sh                 # keep half of each clip (one contiguous run)
#   SAMPLING=uniform RATIO=0.3 ./run_frame_extraction.sh --split train
#   ./run_frame_extraction.sh --source composed         # the all-in-focus control under <root>/frames_sharp
# Environment: RATIO (default 1.0), SAMPLING (contiguous|uniform), SEED (0), ROOT (default: the repository's
# data/demo, from any folder), PYTHON, RETRIES (restarts of a crashed worker, default 3). Other flags pass
# through. The worker is resumable, so a restart redoes only unfinished clips; an error the user must fix
# (exit 1), a usage error (64) and Ctrl-C (130) are not retried.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/utils/launcher.sh"  # no cd: a relative ROOT is the caller's
args=(${ROOT:+--root "$ROOT"} --ratio "${RATIO:-1.0}" --sampling "${SAMPLING:-contiguous}" --seed "${SEED:-0}" "$@")
run_with_retries run_frame_extraction "$PYTHON" "$HERE/preprocess/frame_extraction.py" "${args[@]}"
