"""env_setup.sh is idempotent: with unchanged requirements a second run only checks its stamp."""
import hashlib
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STAMP = REPO / ".venv" / ".requirements.sha256"


def _wanted_stamp() -> str:
    return hashlib.sha256((REPO / "requirements.txt").read_bytes() + (REPO / "pyproject.toml").read_bytes()).hexdigest()


@pytest.mark.skipif(not STAMP.exists() or STAMP.read_text().strip() != _wanted_stamp(),
                    reason="no up-to-date .venv made by env_setup.sh here (make test refreshes it first)")
def test_second_run_is_a_no_op():
    out = subprocess.run(["bash", "env_setup.sh"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "up to date" in out.stdout and "installing" not in out.stdout


def test_requirements_are_pinned():
    lines = [ln.strip() for ln in (REPO / "requirements.txt").read_text().splitlines()]
    reqs = [ln for ln in lines if ln and not ln.startswith("#")]
    assert reqs and all("==" in ln for ln in reqs), [ln for ln in reqs if "==" not in ln]
    names = {ln.split("==")[0].lower() for ln in reqs}
    assert "ultralytics" not in names and "opencv-python" not in names  # GUI OpenCV must not come in
    setuptools = next(ln for ln in reqs if ln.lower().startswith("setuptools=="))
    assert int(setuptools.split("==")[1].split(".")[0]) < 82  # pytorch_wavelets needs pkg_resources
