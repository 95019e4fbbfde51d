"""inference.py end to end on a tiny random refiner: image, folder, video; every user error is one line, no output."""
import logging
import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import inference
from model.checkpoint import save_refiner
from model.refiner import build_refiner
from utils.cli import UserError
from utils.images import read_image, write_png
from utils.video import write_video

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_refiner(path, build_refiner("light", base_channels=8).eval())
    return path


def _image(h, w, seed=0):
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


def _mask(h, w):
    m = np.zeros((h, w), np.float32)
    m[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
    return m


def _no_leftovers(folder: Path):
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_single_png_with_extras(tmp_path, ckpt):
    write_png(tmp_path / "img.png", _image(37, 51))
    write_png(tmp_path / "mask.png", _mask(37, 51))
    out = tmp_path / "out" / "alpha.png"
    assert inference.main(["--i", str(tmp_path / "img.png"), "--c", str(ckpt), "--o", str(out),
                           "--g", str(tmp_path / "mask.png"), "--rgba", "--preview", "--16bit",
                           "--resize_h", "32", "--resize_w", "48"]) == 0
    raw = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert raw.shape == (37, 51) and raw.dtype == np.uint16
    rgba = cv2.imread(str(out.with_name("alpha_rgba.png")), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (37, 51, 4) and np.array_equal(rgba[..., 3], raw)  # the cut-out carries the same alpha
    assert read_image(out.with_name("alpha_preview.png")).shape == (37, 4 * 51, 3)
    assert _no_leftovers(out.parent)


def test_folder_writes_one_alpha_per_image_at_its_size(tmp_path, ckpt):
    (tmp_path / "in").mkdir()
    (tmp_path / "masks").mkdir()
    sizes = {"a": (40, 56), "b": (33, 47)}
    for name, (h, w) in sizes.items():
        write_png(tmp_path / "in" / f"{name}.png", _image(h, w))
        write_png(tmp_path / "masks" / f"{name}.png", _mask(h, w))
    out = tmp_path / "out"
    assert inference.main(["--i", str(tmp_path / "in"), "--c", str(ckpt), "--o", str(out),
                           "--guide", str(tmp_path / "masks"), "--resize_h", "32"]) == 0
    written = sorted(p.name for p in (out / "alpha").iterdir())
    assert written == ["a.png", "b.png"]
    for name, size in sizes.items():
        alpha = read_image(out / "alpha" / f"{name}.png")
        assert alpha.shape == size and 0 <= alpha.min() and alpha.max() <= 1
    assert _no_leftovers(tmp_path)


def test_video_writes_one_alpha_per_frame(tmp_path, ckpt):
    frames = [(_image(48, 64, seed=i) * 255).astype(np.uint8) for i in range(3)]
    write_video(tmp_path / "clip.mp4", frames, fps=10)
    write_png(tmp_path / "mask.png", _mask(48, 64))  # one guide for every frame
    out = tmp_path / "out"
    assert inference.main(["--i", str(tmp_path / "clip.mp4"), "--c", str(ckpt), "--o", str(out),
                           "--g", str(tmp_path / "mask.png"), "--preview"]) == 0
    assert sorted(p.name for p in (out / "alpha").iterdir()) == ["0000.png", "0001.png", "0002.png"]
    assert read_image(out / "alpha" / "0001.png").shape == (48, 64)
    assert (out / "preview.mp4").is_file()


def test_video_with_guide_folder_of_wrong_count_fails_without_output(tmp_path, ckpt):
    frames = [(_image(32, 32, seed=i) * 255).astype(np.uint8) for i in range(3)]
    write_video(tmp_path / "clip.mp4", frames, fps=10)
    (tmp_path / "masks").mkdir()
    for i in range(2):
        write_png(tmp_path / "masks" / f"{i:04d}.png", _mask(32, 32))
    with pytest.raises(UserError, match="fewer masks"):
        inference.main(["--i", str(tmp_path / "clip.mp4"), "--c", str(ckpt), "--o", str(tmp_path / "out"),
                        "--g", str(tmp_path / "masks")])
    assert not (tmp_path / "out").exists() and _no_leftovers(tmp_path)


def test_guide_of_wrong_size_is_resized_with_a_warning(tmp_path, ckpt, caplog):
    write_png(tmp_path / "img.png", _image(40, 56))
    write_png(tmp_path / "mask.png", _mask(20, 28))
    with caplog.at_level(logging.WARNING):
        assert inference.main(["--i", str(tmp_path / "img.png"), "--c", str(ckpt), "--o",
                               str(tmp_path / "out.png"), "--g", str(tmp_path / "mask.png")]) == 0
    assert "resized" in caplog.text
    assert read_image(tmp_path / "out.png").shape == (40, 56)


def test_guides_from_the_guide_mask_stage(tmp_path, ckpt, monkeypatch):
    calls = []

    def fake_guides(images, yolo_ckpt, sam2_ckpt, device="cpu", **kwargs):
        calls.append((len(images), yolo_ckpt, sam2_ckpt, device, kwargs))
        return [_mask(*img.shape[:2]) for img in images]

    module = types.ModuleType("preprocess.guide_mask")
    module.yolo_sam2_guides = fake_guides
    monkeypatch.setitem(sys.modules, "preprocess.guide_mask", module)
    for name in ("yolo.pt", "sam2.pt"):
        (tmp_path / name).write_bytes(b"x")
    write_png(tmp_path / "img.png", _image(24, 32))
    assert inference.main(["--i", str(tmp_path / "img.png"), "--c", str(ckpt), "--o", str(tmp_path / "o.png"),
                           "--yolo_ckpt", str(tmp_path / "yolo.pt"), "--sam2_ckpt", str(tmp_path / "sam2.pt"),
                           "--device", "cpu"]) == 0
    assert calls == [(1, str(tmp_path / "yolo.pt"), str(tmp_path / "sam2.pt"), "cpu", {})]
    assert read_image(tmp_path / "o.png").shape == (24, 32)


def _error_case(tmp_path, ckpt, case):
    write_png(tmp_path / "img.png", _image(24, 32))
    write_png(tmp_path / "mask.png", _mask(24, 32))
    args = {"--i": tmp_path / "img.png", "--c": ckpt, "--o": tmp_path / "out" / "a.png", "--g": tmp_path / "mask.png"}
    if case == "missing checkpoint":
        args["--c"] = tmp_path / "nope.pt"
    elif case == "other model":
        torch.save({"state_dict": {"w": torch.zeros(3)}}, tmp_path / "other.pt")
        args["--c"] = tmp_path / "other.pt"
    elif case == "non-image input":
        (tmp_path / "notes.txt").write_text("hello")
        args["--i"] = tmp_path / "notes.txt"
    elif case == "unreadable image in a folder":
        (tmp_path / "in").mkdir()
        write_png(tmp_path / "in" / "a.png", _image(24, 32))
        (tmp_path / "in" / "b.png").write_bytes(b"not a png")
        args["--i"], args["--o"] = tmp_path / "in", tmp_path / "out"
        args["--g"] = tmp_path / "masks"
        (tmp_path / "masks").mkdir()
        for n in "ab":
            write_png(tmp_path / "masks" / f"{n}.png", _mask(24, 32))
    elif case == "no guide":
        del args["--g"]
    argv = [str(v) for kv in args.items() for v in kv]
    return argv


CASES = {"missing checkpoint": "checkpoint not found", "other model": "not a refiner checkpoint",
         "non-image input": "not an image, folder or video", "unreadable image in a folder": "not a readable image",
         "no guide": "no guide mask"}


@pytest.mark.parametrize("case", list(CASES))
def test_user_errors_leave_no_output(tmp_path, ckpt, case):
    argv = _error_case(tmp_path, ckpt, case)
    with pytest.raises(UserError, match=CASES[case]):
        inference.main(argv)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert _no_leftovers(tmp_path) and (not (tmp_path / "out").exists() or _no_leftovers(tmp_path / "out"))


def test_command_line_error_is_one_line(tmp_path, ckpt):
    argv = _error_case(tmp_path, ckpt, "other model")
    proc = subprocess.run([sys.executable, "inference.py", *argv], cwd=REPO, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "not a refiner checkpoint" in lines[0]
    assert not (tmp_path / "out").exists()


def test_video_with_mask_video_and_flag_errors(tmp_path, ckpt):
    frames = [(_image(32, 48, seed=i) * 255).astype(np.uint8) for i in range(2)]
    write_video(tmp_path / "clip.mp4", frames, fps=10)
    write_video(tmp_path / "mask.mp4", [(_mask(32, 48) * 255).astype(np.uint8)] * 2, fps=10)
    base = ["--i", str(tmp_path / "clip.mp4"), "--c", str(ckpt), "--g", str(tmp_path / "mask.mp4")]
    assert inference.main([*base, "--o", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out" / "alpha").iterdir()) == ["0000.png", "0001.png"]
    with pytest.raises(UserError, match="must be a folder"):
        inference.main([*base, "--o", str(tmp_path / "x.png")])
    with pytest.raises(UserError, match="--fp16 needs a CUDA device"):
        inference.main([*base, "--o", str(tmp_path / "o2"), "--device", "cpu", "--fp16"])
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "o2").exists()
    # a mask video longer than the input is refused like a folder with the wrong count, nothing written
    write_video(tmp_path / "long.mp4", [(_mask(32, 48) * 255).astype(np.uint8)] * 3, fps=10)
    with pytest.raises(UserError, match="has more frames than the input video"):
        inference.main([*base[:4], "--g", str(tmp_path / "long.mp4"), "--o", str(tmp_path / "o3")])
    assert not (tmp_path / "o3").exists()


# ------------------------------------------------------------------ a kill during the move
def _folder_of_images(folder: Path, n: int) -> None:
    for i in range(n):
        write_png(folder / f"im{i:02d}.png", _image(24, 32, seed=i))


def test_folder_output_moves_into_place_in_one_rename(tmp_path, ckpt, monkeypatch):
    """The report: kill -9 while outputs were moved into place file by file left 57 of 400 alphas. Now the folder
    is one rename (or one atomic exchange with an existing folder): old or new, never part of each."""
    _folder_of_images(tmp_path / "in", 6)
    out = tmp_path / "out"
    renames = []
    real = inference.os.replace
    monkeypatch.setattr(inference.os, "replace", lambda a, b: renames.append(Path(b)) or real(a, b))
    args = ["--i", str(tmp_path / "in"), "--c", str(ckpt), "--g", str(tmp_path / "g"), "--o", str(out)]
    (tmp_path / "g").mkdir()
    for i in range(6):
        write_png(tmp_path / "g" / f"im{i:02d}.png", _mask(24, 32))
    assert inference.main(args) == 0
    assert [r for r in renames if r == out or out in r.parents] == [out]
    assert len(list((out / "alpha").iterdir())) == 6 and _no_leftovers(tmp_path)

    # into an existing folder: a kill just before the exchange leaves the old folder whole
    (out / "alpha" / "mine.png").write_bytes(b"user file")
    before = {p.name: p.read_bytes() for p in (out / "alpha").iterdir()}
    _folder_of_images(tmp_path / "in", 8)
    for i in range(8):
        write_png(tmp_path / "g" / f"im{i:02d}.png", _mask(24, 32))

    def killed(a, b):
        raise KeyboardInterrupt

    monkeypatch.setattr(inference, "swap_dirs", killed)
    with pytest.raises(KeyboardInterrupt):
        inference.main(args)
    assert {p.name: p.read_bytes() for p in (out / "alpha").iterdir()} == before
    monkeypatch.undo()
    assert inference.main(args) == 0  # the rerun: all 8, the user's own file kept
    assert sorted(p.name for p in (out / "alpha").iterdir()) == sorted([f"im{i:02d}.png" for i in range(8)] + ["mine.png"])
    assert (out / "alpha" / "mine.png").read_bytes() == b"user file" and _no_leftovers(tmp_path)


def test_rerun_removes_what_a_killed_run_left(tmp_path, ckpt):
    """Every kill used to leave a .<out>.tmp-* folder that no rerun removed."""
    write_png(tmp_path / "img.png", _image(24, 32))
    write_png(tmp_path / "m.png", _mask(24, 32))
    stale = tmp_path / ".out.tmp-abc123" / "alpha"
    stale.mkdir(parents=True)
    (stale / "img.png").write_bytes(b"half")
    (tmp_path / ".out.tmp-def456-old").mkdir()
    assert inference.main(["--i", str(tmp_path / "img.png"), "--c", str(ckpt), "--g", str(tmp_path / "m.png"),
                           "--o", str(tmp_path / "out")]) == 0
    assert _no_leftovers(tmp_path) and (tmp_path / "out" / "alpha" / "img.png").is_file()


def test_second_inference_into_the_same_output_stops(tmp_path, ckpt):
    from utils.locks import hold_lock

    write_png(tmp_path / "img.png", _image(24, 32))
    write_png(tmp_path / "m.png", _mask(24, 32))
    with hold_lock(tmp_path / ".out.lock", "test", remove=True):
        with pytest.raises(UserError, match="already running"):
            inference.main(["--i", str(tmp_path / "img.png"), "--c", str(ckpt), "--g", str(tmp_path / "m.png"),
                            "--o", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_guide_quality_flag_picks_the_output_rule(tmp_path):
    """--guide_quality accurate / coarse force the refiner's two rules, auto leaves the call to the image: with
    the gate forced open and a refinement that wants the subject gone, coarse removes it, accurate only touches
    the boundary ring; random colours agree with no guide, so auto gives the coarse rule although the trust head
    calls the guide accurate."""
    torch.manual_seed(0)
    model = build_refiner("light", base_channels=8).eval()
    with torch.no_grad():
        for head in (model.decoder.head8, model.decoder.head4, model.decoder.f1[-1]):
            head.bias.fill_(-20.0)
        model.decoder.head_gate[-1].weight.zero_()
        model.decoder.gate1[-1].weight.zero_()
        model.decoder.head_gate[-1].bias.fill_(30.0)
        model.decoder.head_trust[-1].weight.zero_()
        model.decoder.head_trust[-1].bias.fill_(30.0)  # auto: the trust head calls every guide accurate
    save_refiner(tmp_path / "open.pt", model)
    write_png(tmp_path / "img.png", _image(64, 64))
    write_png(tmp_path / "mask.png", _mask(64, 64))
    alphas = {}
    for quality in ("auto", "accurate", "coarse"):
        out = tmp_path / f"{quality}.png"
        assert inference.main(["--i", str(tmp_path / "img.png"), "--c", str(tmp_path / "open.pt"), "--o", str(out),
                               "--g", str(tmp_path / "mask.png"), "--guide_quality", quality]) == 0
        alphas[quality] = read_image(out)
    inside = _mask(64, 64) > 0.5
    assert alphas["coarse"][inside].max() < 0.02
    changed = np.abs(alphas["accurate"] - _mask(64, 64)) > 0.01
    from model.masks import boundary_ring
    ring = (boundary_ring(torch.from_numpy(_mask(64, 64).astype(np.float32))[None, None]) > 0)[0, 0].numpy()
    # only the guide's boundary ring (inside: the refinement held at 0.5 or the local samples' alpha; outside: the
    # samples' alpha, held below 0.5)
    assert changed.any() and not changed[~ring].any()
    assert np.array_equal(alphas["auto"], alphas["coarse"])
    with pytest.raises(SystemExit):
        inference.main(["--i", "x", "--c", "y", "--o", "z", "--guide_quality", "sure"])


def test_sparse_path_flags(tmp_path, capsys):
    """--downsample_ratio runs the coarse pass plus full-resolution tiles; --dense every pixel. With a refinement
    that ignores context the two agree; a bad ratio is one line naming the value, and nothing is written."""
    torch.manual_seed(0)
    model = build_refiner("light", base_channels=8).eval()
    with torch.no_grad():
        for head in (model.decoder.head8, model.decoder.head4, model.decoder.f1[-1]):
            head.weight.zero_()
            head.bias.fill_(-2.0)
        model.decoder.guide_gain.zero_()
        model.decoder.head_gate[-1].weight.zero_()
        model.decoder.gate1[-1].weight.zero_()
        model.decoder.head_gate[-1].bias.fill_(30.0)
    save_refiner(tmp_path / "flat.pt", model)
    write_png(tmp_path / "img.png", _image(160, 200))
    write_png(tmp_path / "mask.png", _mask(160, 200))
    got = {}
    for name, extra in (("sparse", ["--downsample_ratio", "0.5"]), ("dense", ["--dense"])):
        out = tmp_path / f"{name}.png"
        assert inference.main(["--i", str(tmp_path / "img.png"), "--c", str(tmp_path / "flat.pt"), "--o", str(out),
                               "--g", str(tmp_path / "mask.png"), "--guide_quality", "accurate", *extra]) == 0
        got[name] = read_image(out)
    assert np.array_equal(got["sparse"], got["dense"]) and not np.array_equal(got["dense"], _mask(160, 200))
    with pytest.raises(SystemExit):
        inference.main(["--i", str(tmp_path / "img.png"), "--c", str(tmp_path / "flat.pt"), "--o",
                        str(tmp_path / "bad.png"), "--downsample_ratio", "2"])
    assert "downsample_ratio must be 'auto' or a number in [1/64, 1], got '2'" in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize("flag,value,message", [("--downsample_ratio", "1e-7", "a number in [1/64, 1]"),
                                                ("--resize_h", "-5", "must be >= 1"), ("--resize_w", "0", "must be >= 1")])
def test_bad_values_are_usage_errors(tmp_path, capsys, flag, value, message):
    """A ratio that passed (0, 1] once padded a 128x96 frame to 10^7 px; a negative size exited 1, not 64."""
    from utils.cli import run_main

    with pytest.raises(SystemExit) as exc:
        run_main(inference.main, ["--i", str(tmp_path / "img.png"), "--c", str(tmp_path / "x.pt"), "--o",
                                  str(tmp_path / "o.png"), flag, value])
    assert exc.value.code == 64 and message in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_long_flags_and_the_original_short_aliases_are_one_vocabulary():
    """--input/--ckpt/--out/--guide_mask are the names; --i/--c/--o/--g (and --guide) the original aliases."""
    long = inference.build_parser().parse_args(["--input", "a", "--ckpt", "b", "--out", "c", "--guide_mask", "d"])
    short = inference.build_parser().parse_args(["--i", "a", "--c", "b", "--o", "c", "--g", "d"])
    older = inference.build_parser().parse_args(["--i", "a", "--c", "b", "--o", "c", "--guide", "d"])
    assert vars(long) == vars(short) == vars(older)
    assert long.preview is False
    assert inference.build_parser().parse_args(["--i", "a", "--c", "b", "--o", "c", "--preview"]).preview is True
