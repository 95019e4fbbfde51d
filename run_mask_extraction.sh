#!/usr/bin/env bash
# Coarse guide masks for the per-frame layout (see preprocess/guide_mask.py).
#   ./run_mask_extraction.sh first_frame            # one mask per clip (its first kept frame)
#   ./run_mask_extraction.sh all_frames             # one mask per frame
#   BACKEND=yolo_sam2 YOLO_CKPT=yolov8n.pt SAM2_CKPT=sam2.1_hiera_tiny.pt ./run_mask_extraction.sh all_frames
#   BACKEND=yolo_sam2 ... ./run_mask_extraction.sh all_frames --propagate sam2
#   BACKEND=matanyone MATANYONE_ROOT=~/MatAnyone MATANYONE_CKPT=matanyone.pth YOLO_CKPT=... SAM2_CKPT=... \
#       ./run_mask_extraction.sh all_frames
# Environment: BACKEND (perturb|yolo_sam2|matanyone, default perturb), ROOT (default: the repository's
# data/demo, from any folder), SEED (0), PYTHON, YOLO_CKPT, SAM2_CKPT, SAM2_CONFIG, MATANYONE_ROOT,
# MATANYONE_CKPT (read by the worker), RETRIES (restarts of a crashed worker, default 3). Other flags pass
# through. Resumable: a restart redoes only unfinished clips; an error the user must fix (exit 1), a usage
# error (64) and Ctrl-C (130) are not retried.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/utils/launcher.sh"  # no cd: a relative ROOT is the caller's
mode="${1:-}"
case "$mode" in
    first_frame|all_frames) shift ;;
    *) echo "usage: $0 first_frame|all_frames [flags for preprocess/guide_mask.py]" >&2; exit "$EXIT_USAGE" ;;
esac
args=(--mode "$mode" --backend "${BACKEND:-perturb}" ${ROOT:+--root "$ROOT"} --seed "${SEED:-0}" "$@")
run_with_retries run_mask_extraction "$PYTHON" "$HERE/preprocess/guide_mask.py" "${args[@]}"
