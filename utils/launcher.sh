# Shared by the thin shell launchers (sourced, not run): the project's Python and a restart loop.
# The launchers do not cd: relative paths (--root data/x, ROOT=...) mean what they mean in the caller's folder.
# HERE is the repository (where the workers live); PYTHON defaults to its .venv.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$( [ -x "$HERE/.venv/bin/python" ] && echo "$HERE/.venv/bin/python" || echo python3 )}"
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
RETRIES="${RETRIES:-3}"

# Exit codes (README, "Conventions"): 0 done; 1 an error to fix; 2 some clips failed (recorded); 3 out of memory;
# 64 a wrong command line (usage); 130 interrupted (Ctrl-C). All are final except a crash or a kill.
EXIT_USAGE=64
EXIT_INTERRUPTED=130

# Ctrl-C reaches the worker and this shell alike (one process group): stop, never restart the worker.
launcher_interrupted() {
    echo "${LAUNCHER_NAME:-launcher}: interrupted" >&2
    exit "$EXIT_INTERRUPTED"
}
trap launcher_interrupted INT

# run_with_retries NAME CMD...: run a resumable worker. Exit codes 0, 1, 2, 3, 64 and 130 are final; anything
# else (a crash, a kill) restarts the worker, which redoes only unfinished units, at most RETRIES times.
run_with_retries() {
    local name=$1 attempt rc
    LAUNCHER_NAME=$name
    shift
    for attempt in $(seq 1 "$RETRIES") last; do
        "$@"
        rc=$?
        case "$rc" in 0|1|2|3|64|130) return "$rc" ;; esac
        [ "$attempt" = last ] && return "$rc"
        echo "$name: worker exited with $rc; restarting ($attempt/$RETRIES)" >&2
    done
}
