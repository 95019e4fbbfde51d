"""The shared restart loop of the thin launchers (utils/launcher.sh), with a fake worker that crashes on cue."""
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _fake_python(tmp_path: Path, codes: list[int]) -> Path:
    """An interpreter stand-in that logs its arguments and exits with the next code in ``codes``."""
    (tmp_path / "codes").write_text("\n".join(map(str, codes)) + "\n")
    script = tmp_path / "python"
    script.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {tmp_path}/calls
code=$(head -n 1 {tmp_path}/codes); sed -i 1d {tmp_path}/codes
exit "$code"
""")
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("launcher,args,worker", [
    ("run_frame_extraction.sh", [], "preprocess/frame_extraction.py"),
    ("run_mask_extraction.sh", ["all_frames"], "preprocess/guide_mask.py"),
])
@pytest.mark.parametrize("codes,expect_rc,expect_calls", [
    ([0], 0, 1),  # done
    ([137, 0], 0, 2),  # killed (e.g. out of memory) -> restarted, resumes
    ([139, 134, 0], 0, 3),  # crashes twice
    ([137, 137, 137, 137], 137, 4),  # keeps crashing: RETRIES=3 restarts, then gives up with the code
    ([1], 1, 1),  # a user error is not retried
    ([2], 2, 1),  # some clips failed and were recorded: not retried
    ([64], 64, 1),  # a usage error: not retried
    ([130], 130, 1),  # Ctrl-C: not retried
])
def test_restart_loop(tmp_path, launcher, args, worker, codes, expect_rc, expect_calls):
    python = _fake_python(tmp_path, codes)
    out = subprocess.run(["bash", launcher, *args, "--shard", "1/2"], cwd=REPO, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHON": str(python), "RETRIES": "3", "RATIO": "0.5"})
    assert out.returncode == expect_rc, out.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == expect_calls
    assert all(c.startswith(f"{REPO}/{worker}") and c.endswith("--shard 1/2") for c in calls)  # flags pass through
    assert out.stderr.count("restarting") == min(expect_calls - 1, 3)
