# The two commands: `make demo` runs every pipeline stage on the embedded default data set;
# `make test` runs the test suite. Both create .venv first (./env_setup.sh) if it is missing or stale.
PY        := .venv/bin/python
STAMP     := .venv/.requirements.sha256
DEMO_ROOT ?= data/demo
RUN_DIR   ?= runs/demo
SEED      ?= 0

.PHONY: demo test venv clean-demo demo-data demo-compose demo-blur demo-frames demo-masks

venv: $(STAMP)
$(STAMP): requirements.txt pyproject.toml
	./env_setup.sh

test: venv
	$(PY) -m pytest -q

# Each stage is idempotent: a second `make demo` reuses what exists and says so.
demo: venv demo-data demo-compose demo-blur demo-frames demo-masks
	@echo "demo: done. data under $(DEMO_ROOT)/, runs under $(RUN_DIR)/"

demo-data: venv
	$(PY) preprocess/make_demo_data.py --root $(DEMO_ROOT) --seed $(SEED)

demo-compose: demo-data
	$(PY) preprocess/compose_video_bg.py --root $(DEMO_ROOT) --seed $(SEED)

# depth (layered backend, offline; cached per clip) then the depth-of-field blur through its launcher
demo-blur: demo-compose
	$(PY) preprocess/depth.py --root $(DEMO_ROOT) --seed $(SEED)
	PYTHON=$(PY) ./run_blur.sh --root $(DEMO_ROOT) --seed $(SEED)
	@echo "demo-blur: blurred clips under $(DEMO_ROOT)/blurred/, previews at $(DEMO_ROOT)/blurred/<split>/<clip>/preview.png"

# Stage 3a: per-frame layout of the blurred clips (frames/) and the all-in-focus control (frames_sharp/).
demo-frames: demo-blur
	$(PY) preprocess/frame_extraction.py --root $(DEMO_ROOT) --seed $(SEED)
	$(PY) preprocess/frame_extraction.py --root $(DEMO_ROOT) --seed $(SEED) --source composed

# Stage 3b: guide masks. Offline default: guides perturbed from the ground truth. With local checkpoints
# (make demo YOLO_CKPT=yolov8n.pt SAM2_CKPT=sam2.1_hiera_tiny.pt) the seed's YOLOv8 + SAM2 recipe instead.
YOLO_CKPT ?=
SAM2_CKPT ?=
MASK_ARGS = $(if $(and $(wildcard $(YOLO_CKPT)),$(wildcard $(SAM2_CKPT))),--backend yolo_sam2 --yolo_ckpt $(YOLO_CKPT) --sam2_ckpt $(SAM2_CKPT),--backend perturb)
demo-masks: demo-frames
	@$(if $(findstring perturb,$(MASK_ARGS)),echo "demo-masks: perturbed ground-truth guides; for YOLOv8+SAM2 guides pass local checkpoints: make demo-masks YOLO_CKPT=yolov8n.pt SAM2_CKPT=sam2.1_hiera_tiny.pt",true)
	$(PY) preprocess/guide_mask.py --root $(DEMO_ROOT) --seed $(SEED) --mode all_frames $(MASK_ARGS)
	$(PY) preprocess/guide_mask.py --root $(DEMO_ROOT) --seed $(SEED) --mode all_frames --tree frames_sharp $(MASK_ARGS)

clean-demo:
	rm -rf $(DEMO_ROOT) $(RUN_DIR)
