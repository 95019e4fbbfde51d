"""bench/real_alpha.py: real photographs with alpha, scored beside the guide and classical matting."""
import numpy as np
import pytest
import torch

from bench import real_alpha as R
from model.checkpoint import save_refiner
from model.masks import boundary_ring
from model.refiner import build_refiner
from pipeline import metrics as M
from utils.cli import UserError
from utils.images import write_png


def _photo(h=96, w=128, seed=0):
    """A disc with a soft rim and thin soft strands on its right: a toy head with hair."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    alpha = np.clip((30 - np.hypot(yy - h / 2, xx - w / 3)) / 3 + 0.5, 0, 1)
    for k in range(6):  # strands: 1-px lines of coverage 0.4
        alpha[int(h / 2) - 15 + 5 * k, int(w / 3) + 28: int(w / 3) + 60] = np.maximum(
            alpha[int(h / 2) - 15 + 5 * k, int(w / 3) + 28: int(w / 3) + 60], 0.4)
    fg = np.clip(0.6 + 0.1 * rng.standard_normal((h, w, 3)), 0, 1)
    bg = np.clip(0.2 + 0.05 * np.sin(xx / 4)[..., None] + 0.02 * rng.standard_normal((h, w, 3)), 0, 1)
    return (alpha[..., None] * fg + (1 - alpha[..., None]) * bg).astype(np.float32), alpha.astype(np.float32)


def test_guides_and_crops():
    _, alpha = _photo()
    acc = R.accurate_guide(alpha)
    assert set(np.unique(acc)) <= {0.0, 1.0} and np.array_equal(acc, (alpha >= 0.5).astype(np.float32))
    coarse = R.coarse_guide(alpha)
    assert coarse.shape == alpha.shape and set(np.unique(coarse)) <= {0.0, 1.0}
    assert (coarse >= acc).mean() > 0.97 and M.mad(coarse, alpha) > M.mad(acc, alpha)  # wider, and worse
    corners = R.hair_crops(alpha, 32, 3)
    assert 1 <= len(corners) <= 3
    soft = (alpha > 0.02) & (alpha < 0.98)
    best = max((soft[y:y + 32, x:x + 32].sum(), (y, x)) for y in range(0, 65, 16) for x in range(0, 97, 16))
    assert soft[corners[0][0]:corners[0][0] + 32, corners[0][1]:corners[0][1] + 32].sum() == best[0]
    for (y1, x1), (y2, x2) in zip(corners, corners[1:]):
        assert abs(y1 - y2) >= 32 or abs(x1 - x2) >= 32  # never overlapping
    assert R.hair_crops(np.zeros((64, 64), np.float32), 32, 2) == []  # no soft pixel: no crop
    assert R.far_changed(acc, acc) == 0.0


def test_scores_every_method_beside_the_guide(tmp_path, capsys):
    image, alpha = _photo()
    write_png(tmp_path / "set" / "s" / "image" / "p0.png", image)
    write_png(tmp_path / "set" / "s" / "alpha" / "p0.png", alpha, bits=16)
    torch.manual_seed(0)
    save_refiner(tmp_path / "m.pt", build_refiner("light", base_channels=8))
    out = tmp_path / "out"
    # without the coarse band (its own test below), as the ablation scores an untrained refiner
    assert R.main(["--root", str(tmp_path / "set"), "--ckpt", str(tmp_path / "m.pt"), "--out", str(out),
                   "--crop", "48", "--crops", "1", "--long_side", "64", "--no_coarse_band"]) == 0
    rows = list(__import__("csv").DictReader(open(out / "per_item.csv")))
    items = {r["item"] for r in rows}
    assert len(items) == 2 and any(i.endswith("@whole") for i in items)
    methods = {(r["guide_kind"], r["method"]) for r in rows}
    assert methods == {("accurate", m) for m in ("guide", "refiner", "refiner_told", "closed_form", "shared")} | \
        {("coarse", m) for m in ("guide", "refiner", "closed_form", "shared")}
    crop = next(r for r in rows if r["item"].endswith("@whole") and r["guide_kind"] == "accurate"
                and r["method"] == "guide")
    small = np.clip(R.resize(alpha, (48, 64)), 0, 1)
    assert float(crop["mad"]) == pytest.approx(M.mad(R.accurate_guide(small), small), rel=1e-6)
    # an untrained refiner's gate stays shut: at most the guide's ring changes (where the colour line takes its
    # refinement, each pixel by at most 0.5), far changes none
    for r in rows:
        if r["method"].startswith("refiner"):
            twin = next(g for g in rows if g["item"] == r["item"] and g["guide_kind"] == r["guide_kind"]
                        and g["method"] == "guide")
            where = r["item"].split("@")[1]
            y, x = (0, 0) if where == "whole" else map(int, where.split(","))
            gt = small if where == "whole" else alpha[y:y + 48, x:x + 48]
            guide = R.accurate_guide(gt) if r["guide_kind"] == "accurate" else R.coarse_guide(gt)
            ring_share = float(boundary_ring(torch.from_numpy(guide)[None, None]).mean())
            assert abs(float(r["mad"]) - float(twin["mad"])) <= 1000 * 0.5 * ring_share + 1e-6
            assert float(r["far_pct"]) == 0.0
    classical = [float(r["mad"]) for r in rows if r["method"] == "closed_form" and r["guide_kind"] == "accurate"]
    guides = [float(r["mad"]) for r in rows if r["method"] == "guide" and r["guide_kind"] == "accurate"]
    assert np.mean(classical) < np.mean(guides)  # closed-form refines a binary guide's soft edge
    text = (out / "table.md").read_text()
    assert "| item | guide | guide | refiner | refiner_told | closed_form | shared |" in text and "Mean mad_unknown" in text
    assert len(list(out.glob("*.png"))) == 4


def test_absent_set_is_skipped_and_a_size_mismatch_is_one_line(tmp_path, capsys):
    assert R.main(["--root", str(tmp_path / "none")]) == 0
    assert "nothing to score" in capsys.readouterr().out
    image, alpha = _photo()
    write_png(tmp_path / "s" / "x" / "image" / "p.png", image)
    write_png(tmp_path / "s" / "x" / "alpha" / "p.png", alpha[:-2])
    with pytest.raises(UserError, match="its image"):
        R.main(["--root", str(tmp_path / "s"), "--out", str(tmp_path / "o")])


def test_baselines_can_be_left_out_and_panels_skipped(tmp_path):
    """The ablation scores each run's refiner alone (the classical methods once per grid): --baselines none
    gives the guide and the refiners, the same numbers as with the baselines, and --no_panels no image."""
    image, alpha = _photo()
    write_png(tmp_path / "set" / "s" / "image" / "p0.png", image)
    write_png(tmp_path / "set" / "s" / "alpha" / "p0.png", alpha, bits=16)
    torch.manual_seed(0)
    save_refiner(tmp_path / "m.pt", build_refiner("light", base_channels=8))
    common = ["--root", str(tmp_path / "set"), "--ckpt", str(tmp_path / "m.pt"), "--crop", "48", "--crops", "1",
              "--long_side", "0"]
    assert R.main(common + ["--out", str(tmp_path / "all")]) == 0
    assert R.main(common + ["--out", str(tmp_path / "alone"), "--baselines", "none", "--no_panels"]) == 0
    read = lambda f: {(r["item"], r["guide_kind"], r["method"]): r["mad"]  # noqa: E731
                      for r in __import__("csv").DictReader(open(f))}
    alone, every = read(tmp_path / "alone" / "per_item.csv"), read(tmp_path / "all" / "per_item.csv")
    assert {k[2] for k in alone} == {"guide", "refiner", "refiner_told"}
    assert all(every[k] == v for k, v in alone.items())
    assert not list((tmp_path / "alone").glob("*.png")) and len(list((tmp_path / "all").glob("*.png"))) == 2
    with pytest.raises(UserError, match="unknown method 'knn'"):
        R.main(common + ["--out", str(tmp_path / "bad"), "--baselines", "shared,knn"])
    assert not (tmp_path / "bad").exists()


def test_the_coarse_band_refines_an_untrained_refiners_coarse_guide_near_its_edge_only(tmp_path):
    """By default a coarse-ruled guide's band takes the local samples' alpha (model.evidence.coarse_band_alpha):
    on the toy head even an untrained refiner's coarse rows beat their guide, and nothing 16 px or more from the
    guide's boundary moves."""
    image, alpha = _photo()
    write_png(tmp_path / "set" / "s" / "image" / "p0.png", image)
    write_png(tmp_path / "set" / "s" / "alpha" / "p0.png", alpha, bits=16)
    torch.manual_seed(0)
    save_refiner(tmp_path / "m.pt", build_refiner("light", base_channels=8))
    out = tmp_path / "out"
    assert R.main(["--root", str(tmp_path / "set"), "--ckpt", str(tmp_path / "m.pt"), "--out", str(out),
                   "--crops", "0", "--long_side", "128", "--baselines", "none", "--no_panels"]) == 0
    rows = {(r["guide_kind"], r["method"]): r for r in __import__("csv").DictReader(open(out / "per_item.csv"))}
    assert float(rows[("coarse", "refiner")]["mad"]) < 0.6 * float(rows[("coarse", "guide")]["mad"])
    assert float(rows[("coarse", "refiner")]["far_pct"]) == 0.0
