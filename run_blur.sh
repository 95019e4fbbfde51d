#!/usr/bin/env bash
# Depth-of-field blur of every composed clip (preprocess/dof_blur.py), restarted after a crash.
#
#   ./run_blur.sh [--root data/demo] [--split all] [--shard I/N] [--device cpu|cuda] [any dof_blur.py flag]
#
# The worker picks its chunk size (frames per batch) from free GPU memory or free RAM and the frame size
# (utils/memory.py); each finished chunk is recorded in <root>/.manifest/blur/, so a restart continues where
# the last run stopped and recomputes nothing finished. After a crash (an out-of-memory kill included) the
# worker is started again with half the chunk size, at most MAX_RETRIES times.
# Exit: 0 done; 1 a user error (bad path, missing weights) or a Python exception (retrying cannot help); 2 some
# clips failed (bad input, recorded and skipped); 64 a wrong command line (usage); 130 interrupted (Ctrl-C: the
# worker and this loop stop, nothing is restarted); 3 the worker kept crashing or running out of memory.
# No cd: relative paths (--root data/x) are the caller's.
set -u
source "$(dirname "${BASH_SOURCE[0]}")/utils/launcher.sh"
LAUNCHER_NAME=run_blur
MAX_RETRIES=${MAX_RETRIES:-4}

divisor=1
attempt=0
while true; do
  attempt=$((attempt + 1))
  echo "run_blur: attempt $attempt, chunk size divided by $divisor" >&2
  "$PYTHON" "$HERE/preprocess/dof_blur.py" "$@" --chunk_divisor "$divisor"
  rc=$?
  case $rc in
    0) exit 0 ;;
    1) exit 1 ;;  # a user error (one line above) or a Python exception: the same again on a retry
    2) echo "run_blur: some clips failed (see the warnings above); the others are done" >&2; exit 2 ;;
    "$EXIT_USAGE") exit "$EXIT_USAGE" ;;  # argparse printed the usage: nothing ran
    "$EXIT_INTERRUPTED") launcher_interrupted ;;  # Ctrl-C: stop, do not restart
  esac
  if [ "$attempt" -gt "$MAX_RETRIES" ]; then
    echo "run_blur: error: the worker failed $attempt times (last exit code $rc); giving up" >&2
    exit 3
  fi
  # 137 = SIGKILL (the kernel's OOM killer), 3 = MemoryError caught by the worker, anything else = a crash
  echo "run_blur: worker exited with code $rc; restarting with half the chunk size" >&2
  divisor=$((divisor * 2))
done
