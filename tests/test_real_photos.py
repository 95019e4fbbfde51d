"""bench/real_photos.py: the stored GrabCut guides load, the photos run through the path inference uses (the sparse
path's fine stage with --upscale 2), and every photo gets a row and a panel."""
import pytest
import torch

from bench import real_photos
from model.checkpoint import save_refiner
from model.refiner import build_refiner


def test_upscaled_photos_take_the_fine_stage(tmp_path, capsys):
    torch.manual_seed(0)
    model = build_refiner("light", base_channels=8)
    model.fine_steps.fill_(1)  # a trained-looking fine stage: the sparse path runs it, not the fallback
    save_refiner(tmp_path / "m.pt", model)
    assert real_photos.main(["--ckpt", str(tmp_path / "m.pt"), "--photos", "camera", "--upscale", "2",
                             "--out", str(tmp_path / "out")]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| camera |")]
    assert len(rows) == 1
    assert (tmp_path / "out" / f"camera_{tmp_path.parent.name}_{tmp_path.name}_x2_panel.png").is_file()
    image, guide = real_photos.upscaled(real_photos.load_photo("camera"), real_photos.guide_for("camera"), 2)
    assert image.shape[:2] == guide.shape == (1024, 1024) and set(map(float, guide.ravel()[::97])) <= {0.0, 1.0}


def test_panels_of_two_checkpoints_of_one_run_get_two_names(tmp_path):
    from bench.real_photos import panel_tag

    a, b = str(tmp_path / "runs" / "x" / "best.pt"), str(tmp_path / "runs" / "x" / "last.pt")
    other = str(tmp_path / "runs" / "y" / "best.pt")
    assert panel_tag(a, [a]) == "runs_x" and panel_tag(a, [a, other]) == "runs_x"
    assert {panel_tag(a, [a, b]), panel_tag(b, [a, b])} == {"runs_x_best", "runs_x_last"}


def test_a_photo_missing_from_the_install_is_one_line(monkeypatch):
    import skimage.data

    from bench import real_photos
    from utils.cli import UserError

    def missing():
        raise ModuleNotFoundError("pooch")  # what skimage raises when it would have to download the file

    monkeypatch.setattr(skimage.data, "astronaut", missing)
    with pytest.raises(UserError, match="photo 'astronaut' is not installed"):
        real_photos.load_photo("astronaut")
