"""Nothing may touch the network: build the project's models and draw with sockets blocked.

The check runs in a fresh interpreter so that no library has cached anything from an earlier import.
Every connection attempt and DNS lookup is recorded and turned into an error; the script fails if any
happened, even one a library swallowed.
"""
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BLOCK = textwrap.dedent("""
    import socket
    attempts = []
    def _refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network access blocked by test: %r" % (args[:2],))
    socket.socket.connect = _refuse
    socket.socket.connect_ex = _refuse
    socket.create_connection = _refuse
    socket.getaddrinfo = _refuse
    import atexit
    @atexit.register
    def _report():
        if attempts:
            import os
            print("CONNECTION ATTEMPTS:", attempts, flush=True)
            os._exit(3)
""")

BUILD = textwrap.dedent("""
    import utils.offline  # noqa: F401  (what every entry point imports first)
    import os, tempfile
    import numpy as np
    import torch
    # ultralytics: a YOLOv8 built from the package's own config, a prediction and a drawn label (fonts!)
    from ultralytics import YOLO
    yolo = YOLO("yolov8n.yaml")
    res = yolo.predict(np.zeros((64, 64, 3), np.uint8), device="cpu", verbose=False, conf=0.0, max_det=3)
    res[0].plot()
    from ultralytics.utils.plotting import Annotator
    ann = Annotator(np.zeros((64, 64, 3), np.uint8), pil=True)
    ann.box_label([2, 2, 40, 40], "person")
    # sam2: the tiny model from a shipped config, random weights, through its builder
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    model = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu", mode="eval")
    predictor = SAM2ImagePredictor(model)
    # wavelets, matplotlib
    import pytorch_wavelets, pywt, matplotlib.pyplot as plt
    pytorch_wavelets.DWTForward(J=1, wave="db2")(torch.zeros(1, 1, 8, 8))
    plt.figure(); plt.plot([0, 1]); plt.savefig(os.path.join(tempfile.mkdtemp(), "x.png"))
    # the project's own models, where present
    try:
        from model.refiner import build_refiner
        from model.config import VARIANTS
    except ImportError:
        VARIANTS = ()
    for v in VARIANTS:
        build_refiner(v, base_channels=8)
    assert os.environ["YOLO_OFFLINE"] == "1" and os.environ["HF_HUB_OFFLINE"] == "1"
    print("OFFLINE-OK", len(VARIANTS))
""")


def test_models_build_and_draw_with_sockets_blocked(tmp_path):
    script = tmp_path / "offline_check.py"
    script.write_text(BLOCK + BUILD)
    out = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO)})
    assert "CONNECTION ATTEMPTS" not in out.stdout, out.stdout
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OFFLINE-OK" in out.stdout


def test_offline_env_places_ultralytics_fonts(tmp_path):
    code = ("import utils.offline, os, pathlib; d = pathlib.Path(os.environ['YOLO_CONFIG_DIR']) / 'Ultralytics';"
            "print(sorted(p.name for p in d.glob('*.ttf')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO),
                              "YOLO_CONFIG_DIR": str(tmp_path / "cfg")})
    assert out.returncode == 0, out.stderr
    assert "Arial.ttf" in out.stdout and "Arial.Unicode.ttf" in out.stdout
