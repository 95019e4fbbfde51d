"""bench_train runs end to end on tiny settings and prints the three rates side by side (no timing asserted)."""
from bench import bench_train
from tests.train_helpers import repo_on_pythonpath

repo_on_pythonpath()


def test_bench_train_smoke(capsys):
    assert bench_train.main(["--quick", "--crop", "32", "--frame_size", "48", "64", "--steps", "1", "--variants",
                             "light", "--base_channels", "8", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "loader" in out and "model step" in out and "full step" in out
    row = [line for line in out.splitlines() if line.startswith("light")][0].split()
    assert all(float(x) > 0 for x in row[1:4]) and row[-1] in ("loader", "model")
