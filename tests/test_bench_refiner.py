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


def test_sparse_table_counts_the_paths_on_a_person_frame(tmp_path):
    """Table (d) on a 1280x720 person frame (auto: a coarse pass at 1/2): every path gets a GFLOP count, a time and
    (for ours) a MAD. A random refiner's gate never opens: its sparse path is the coarse pass alone and returns
    the guide. With the gate forced open and a fine stage, the fine stage's tiles run, and the sparse path still
    costs less than the dense one."""
    import torch

    from bench.bench_refiner import bench_sparse
    from model.checkpoint import save_refiner
    from model.refiner import build_refiner

    rows = bench_sparse(None, [(720, 1280)], base=8, repeats=1)
    by = {(r["name"], r["guide"]): r for r in rows}
    assert set(by) == {(p, g) for p in ("dense", "sparse (fallback)") for g in ("accurate", "mask")}
    for g in ("accurate", "mask"):
        dense, sparse = by[("dense", g)], by[("sparse (fallback)", g)]
        assert dense["gflop"] > 0 and sparse["fps"] > 0 and dense["mad"] is not None
        assert sparse["tiles"] == 0 and sparse["gflop"] < dense["gflop"]

    torch.manual_seed(0)
    model = build_refiner("light", base_channels=8)
    with torch.no_grad():
        model.decoder.head_gate[-1].bias.fill_(30.0)  # the gate open everywhere
        model.fine_steps.fill_(1)
    save_refiner(tmp_path / "open.pt", model)
    rows = bench_sparse(str(tmp_path / "open.pt"), [(720, 1280)], base=8, repeats=1)
    by = {(r["name"], r["guide"]): r for r in rows}
    for g in ("accurate", "mask"):
        dense, sparse = by[("dense", g)], by[("sparse (fine stage)", g)]
        assert sparse["tiles"] > 0 and sparse["gflop"] < dense["gflop"] and sparse["mad"] is not None
