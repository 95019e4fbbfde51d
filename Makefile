# The two commands: `make demo` runs every pipeline stage on the embedded default data set;
# `make test` runs the test suite. Both create .venv first (./env_setup.sh) if it is missing or stale.
PY        := .venv/bin/python
STAMP     := .venv/.requirements.sha256
DEMO_ROOT ?= data/demo
RUN_DIR   ?= runs/demo
SEED      ?= 0

.PHONY: demo test venv clean-demo demo-data demo-compose

venv: $(STAMP)
$(STAMP): requirements.txt pyproject.toml
	./env_setup.sh

test: venv
	$(PY) -m pytest -q

# Each stage is idempotent: a second `make demo` reuses what exists and says so.
demo: venv demo-data demo-compose
	@echo "demo: done. data under $(DEMO_ROOT)/, runs under $(RUN_DIR)/"

demo-data: venv
	$(PY) preprocess/make_demo_data.py --root $(DEMO_ROOT) --seed $(SEED)

demo-compose: demo-data
	$(PY) preprocess/compose_video_bg.py --root $(DEMO_ROOT) --seed $(SEED)

clean-demo:
	rm -rf $(DEMO_ROOT) $(RUN_DIR)
