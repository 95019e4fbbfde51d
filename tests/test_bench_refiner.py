"""bench/bench_refiner.py runs end to end at toy sizes (no timing is asserted, only that it measures and agrees)."""
from bench.bench_refiner import main


def test_bench_smoke(capsys):
    assert main(["--dwt_size", "64x32", "--dwt_channels", "2", "--dwt_repeats", "1", "--sizes", "64x64",
                 "--variants", "light,none", "--repeats", "1", "--base_channels", "8", "--threads", "0"]) == 0
    out = capsys.readouterr().out
    assert "equal within 1e-5" in out and "speed ratio" in out
    rows = [line for line in out.splitlines() if line.startswith("| light |") or line.startswith("| none |")]
    assert len(rows) == 2 and all("64x64" in r for r in rows)
