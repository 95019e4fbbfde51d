"""bench/bench_refiner.py runs end to end at toy sizes (no timing is asserted, only that it measures and agrees)."""
from bench.bench_refiner import main


def test_bench_smoke(capsys):
    assert main(["--dwt_size", "64x32", "--dwt_channels", "2", "--dwt_repeats", "1", "--sizes", "64x64",
                 "--variants", "light,none", "--repeats", "1", "--base_channels", "8", "--threads", "0",
                 "--skip_sparse"]) == 0
    out = capsys.readouterr().out
    assert "equal within 1e-5" in out and "speed ratio" in out
    rows = [line for line in out.splitlines() if line.startswith("| light |") or line.startswith("| none |")]
    assert len(rows) == 2 and all("64x64" in r for r in rows)


def test_sparse_table_counts_the_paths_on_a_person_frame():
    """Table (d) on a 640x360 person frame (a coarse pass at 0.8): every path gets a GFLOP count, a time and (for
    ours) a MAD; the sparse path never costs more than the dense one plus its coarse pass."""
    from bench.bench_refiner import bench_sparse

    rows = bench_sparse(None, [(360, 640)], base=8, repeats=1)
    by = {(r["name"], r["guide"]): r for r in rows}
    assert set(by) == {(p, g) for p in ("dense", "sparse") for g in ("accurate", "mask")}
    for g in ("accurate", "mask"):
        dense, sparse = by[("dense", g)], by[("sparse", g)]
        assert dense["gflop"] > 0 and sparse["fps"] > 0 and dense["mad"] is not None
        # a random refiner's gate never opens: the sparse path is its coarse pass alone and returns the guide
        assert sparse["tiles"] == 0 and sparse["gflop"] < dense["gflop"]
