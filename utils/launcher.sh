# Shared by the thin shell launchers (sourced, not run): the project's Python and a restart loop.
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
RETRIES="${RETRIES:-3}"

# run_with_retries NAME CMD...: run a resumable worker. Exit codes 0 (done), 1 (an error the user must fix),
# 2 (some units failed and were recorded) and 130 (interrupted) are final; anything else (a crash, a kill)
# restarts the worker, which redoes only unfinished units, at most RETRIES times.
run_with_retries() {
    local name=$1 attempt rc
    shift
    for attempt in $(seq 1 "$RETRIES") last; do
        "$@"
        rc=$?
        case "$rc" in 0|1|2|130) return "$rc" ;; esac
        [ "$attempt" = last ] && return "$rc"
        echo "$name: worker exited with $rc; restarting ($attempt/$RETRIES)" >&2
    done
}
