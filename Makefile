# The two commands: `make demo` runs every pipeline stage on the embedded default data set;
# `make test` runs the test suite. Both create .venv first (./env_setup.sh) if it is missing or stale.
PY        := .venv/bin/python
STAMP     := .venv/.requirements.sha256
DEMO_ROOT ?= data/demo
RUN_DIR   ?= runs/demo
SEED      ?= 0

.PHONY: demo test venv clean-demo demo-data demo-compose demo-blur

venv: $(STAMP)
$(STAMP): requirements.txt pyproject.toml
	./env_setup.sh

test: venv
	$(PY) -m pytest -q

# Each stage is idempotent: a second `make demo` reuses what exists and says so.
demo: venv demo-data demo-compose demo-blur
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

clean-demo:
	rm -rf $(DEMO_ROOT) $(RUN_DIR)
