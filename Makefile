# The two commands: `make demo` runs every pipeline stage on the embedded default data set;
# `make test` runs the test suite. Both create .venv first (./env_setup.sh) if it is missing or stale.
PY        := .venv/bin/python
STAMP     := .venv/.requirements.sha256
DEMO_ROOT ?= data/demo
RUN_DIR   ?= runs/demo
SEED      ?= 0

.PHONY: demo test venv clean-demo demo-data demo-compose demo-blur demo-frames demo-masks demo-train demo-eval demo-ablation demo-infer \
	train-cpu-data train-cpu train-cpu-eval train-cpu-seeds ablation-cpu ablation-cpu-quick ablation-learned-data ablation-learned train-fine-data train-fine train-fine-eval hd-data hd-eval

venv: $(STAMP)
$(STAMP): requirements.txt pyproject.toml
	./env_setup.sh

test: venv
	$(PY) -m pytest -q

# Each stage is idempotent: a second `make demo` reuses what exists and says so.
demo: venv demo-data demo-compose demo-blur demo-frames demo-masks demo-train demo-eval demo-ablation demo-infer
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
# (make demo YOLO_CKPT=yolov8n.pt SAM2_CKPT=sam2.1_hiera_tiny.pt) the original work's YOLOv8 + SAM2 recipe instead.
YOLO_CKPT ?=
SAM2_CKPT ?=
MASK_ARGS = $(if $(and $(wildcard $(YOLO_CKPT)),$(wildcard $(SAM2_CKPT))),--backend yolo_sam2 --yolo_ckpt $(YOLO_CKPT) --sam2_ckpt $(SAM2_CKPT),--backend perturb)
demo-masks: demo-frames
	@$(if $(findstring perturb,$(MASK_ARGS)),echo "demo-masks: perturbed ground-truth guides; for YOLOv8+SAM2 guides pass local checkpoints: make demo-masks YOLO_CKPT=yolov8n.pt SAM2_CKPT=sam2.1_hiera_tiny.pt",true)
	$(PY) preprocess/guide_mask.py --root $(DEMO_ROOT) --seed $(SEED) --mode all_frames $(MASK_ARGS)
	$(PY) preprocess/guide_mask.py --root $(DEMO_ROOT) --seed $(SEED) --mode all_frames --tree frames_sharp $(MASK_ARGS)

# Training (pipeline/solver_refiner_maggie.py): a 450-step CPU run of the light refiner (make train-cpu's width and
# crop, a higher learning rate); a rerun
# resumes/reuses runs/demo/train. Guides: the mask stage's files mixed with perturbed GT when masks exist.
DEMO_GUIDE = $(if $(wildcard $(DEMO_ROOT)/frames/train/mask),mixed,perturb)
DEMO_TRAIN_ARGS = --root $(DEMO_ROOT) --runs_dir $(RUN_DIR) --name train --model light --guide_mode $(DEMO_GUIDE) \
	--steps 450 --batch_size 4 --crop 128 --base_channels 16 --num_workers 0 --threads 2 --warmup_steps 30 --lr 2e-3 \
	--eval_every 150 --ckpt_every 50 --log_every 10 --val_max_frames 4 --best_metric mad --seed $(SEED)
demo-train: demo-masks
	$(PY) pipeline/solver_refiner_maggie.py $(DEMO_TRAIN_ARGS) $(if $(wildcard $(RUN_DIR)/train/last.pt),--resume,)

# Evaluation (pipeline/evaluate.py): the trained checkpoint and the guide / closed-form baselines on the test split.
demo-eval: demo-train
	$(PY) pipeline/evaluate.py --root $(DEMO_ROOT) --split test --ckpt $(RUN_DIR)/train/best.pt --labels light \
		--max_frames 8 --out $(RUN_DIR)/eval --seed $(SEED)

# The DWT ablation, tiny: one seed, variants none and light, defocused frames and the all-in-focus control.
demo-ablation: demo-eval
	$(PY) pipeline/ablation.py --root $(DEMO_ROOT) --out $(RUN_DIR)/ablation --tiny --seeds $(SEED) -- --threads 1

# Inference (inference.py) with the trained checkpoint on one test frame and its guide mask.
DEMO_FRAME = $(DEMO_ROOT)/frames/test/image/clip_0000/frames/0012.png
demo-infer: demo-train
	$(PY) inference.py --i $(DEMO_FRAME) --g $(subst /image/,/mask/,$(DEMO_FRAME)) --c $(RUN_DIR)/train/best.pt \
		--o $(RUN_DIR)/infer/clip_0000_0012.png --preview --rgba

clean-demo:
	rm -rf $(DEMO_ROOT) $(RUN_DIR)

# ---------------------------------------------------------------------------------------------------------------
# make train-cpu: the documented CPU recipe. A training set of 30 clips (make_demo_data --scale 5, 12 frames each,
# every stage, train split only) in data/train-cpu, the default light refiner trained from scratch into
# runs/train-cpu/s$(SEED), then scored at full resolution on the embedded test split (data/demo, test) with the
# mask stage's guides and with accurate guides, beside the guide, closed-form and shared matting, and run on the
# real photos (bench/real_photos.py; bench/real_alpha.py where data/real_alpha or $$REAL_ALPHA_ROOT holds photos
# with alpha, else it says so and goes on). make train-cpu-seeds does seeds 0 1 2 and scores them together.
TC_ROOT  ?= data/train-cpu
TC_RUNS  ?= runs/train-cpu
TC_STEPS ?= 2400
TRAIN_CPU_ARGS = --root $(TC_ROOT) --runs_dir $(TC_RUNS) --model light --guide_mode mixed --accurate_guide_prob 0.5 \
	--steps $(TC_STEPS) --batch_size 4 --crop 128 --base_channels 16 --num_workers 0 --threads 2 --warmup_steps 100 \
	--lr 1e-3 --eval_every 400 --ckpt_every 200 --log_every 50 --val_max_frames 16 --best_metric mad
train-cpu-data: venv
	$(PY) preprocess/make_demo_data.py --root $(TC_ROOT) --split train --scale 5 --frames 12 --seed $(SEED)
	$(PY) preprocess/compose_video_bg.py --root $(TC_ROOT) --split train --seed $(SEED)
	$(PY) preprocess/depth.py --root $(TC_ROOT) --split train --seed $(SEED)
	PYTHON=$(PY) ./run_blur.sh --root $(TC_ROOT) --split train --seed $(SEED)
	$(PY) preprocess/frame_extraction.py --root $(TC_ROOT) --split train --seed $(SEED)
	$(PY) preprocess/guide_mask.py --root $(TC_ROOT) --split train --seed $(SEED) --mode all_frames --backend perturb

train-cpu: train-cpu-data demo-masks
	$(PY) pipeline/solver_refiner_maggie.py $(TRAIN_CPU_ARGS) --name s$(SEED) --seed $(SEED) \
		$(if $(wildcard $(TC_RUNS)/s$(SEED)/last.pt),--resume,)
	$(MAKE) train-cpu-eval TC_CKPTS=$(TC_RUNS)/s$(SEED)/best.pt

TC_CKPTS ?= $(TC_RUNS)/s0/best.pt
train-cpu-eval:
	$(PY) pipeline/evaluate.py --root $(DEMO_ROOT) --split test --guide_mode files --ckpt $(TC_CKPTS) \
		--labels $(foreach c,$(TC_CKPTS),light) --out $(TC_RUNS)/eval_mask_guides
	$(PY) pipeline/evaluate.py --root $(DEMO_ROOT) --split test --guide_mode accurate --ckpt $(TC_CKPTS) \
		--labels $(foreach c,$(TC_CKPTS),light) --out $(TC_RUNS)/eval_accurate_guides
	$(PY) bench/real_photos.py --ckpt $(TC_CKPTS) --out $(TC_RUNS)/real_photos
	$(PY) bench/real_alpha.py --ckpt $(TC_CKPTS) --out $(TC_RUNS)/real_alpha

train-cpu-seeds:
	for s in 0 1 2; do $(MAKE) train-cpu SEED=$$s || exit 1; done
	$(MAKE) train-cpu-eval TC_CKPTS="$(TC_RUNS)/s0/best.pt $(TC_RUNS)/s1/best.pt $(TC_RUNS)/s2/best.pt"

# ---------------------------------------------------------------------------------------------------------------
# make train-fine: the sparse path's fine stage (model/fine.py) for make train-cpu's model, the refiner frozen.
# Frames above 768 px on the long side run a coarse pass at 1/k and the fine stage in 16-px tiles; it is trained
# on large frames: data/hires-train (the demo generator at 1152x768, 30 clips of 6 frames, every stage; ~12
# minutes) and scored on data/hires (3 test clips at 1152x768) beside the dense pass, the fallback and the
# baselines. 2000 steps, about 20 minutes on a free core. Writes $(FINE_RUNS)/s$(SEED)/fine.pt (a refiner checkpoint).
# every pipeline stage after the generator over one root's split, perturbed-truth guides: $(call stages,ROOT,SPLIT)
stages = $(PY) preprocess/compose_video_bg.py --root $(1) --split $(2) --seed $(SEED) && \
	$(PY) preprocess/depth.py --root $(1) --split $(2) --seed $(SEED) && \
	PYTHON=$(PY) ./run_blur.sh --root $(1) --split $(2) --seed $(SEED) && \
	$(PY) preprocess/frame_extraction.py --root $(1) --split $(2) --seed $(SEED) && \
	$(PY) preprocess/guide_mask.py --root $(1) --split $(2) --seed $(SEED) --mode all_frames --backend perturb
FINE_ROOT ?= data/hires-train
FINE_TEST_ROOT ?= data/hires
FINE_RUNS ?= runs/fine
HIRES     = --size 1152x768 --frames 6 --seed $(SEED)
train-fine-data: venv
	$(PY) preprocess/make_demo_data.py --root $(FINE_ROOT) --split train --scale 5 $(HIRES)
	$(PY) preprocess/make_demo_data.py --root $(FINE_TEST_ROOT) --split test $(HIRES)
	$(call stages,$(FINE_ROOT),train)
	$(call stages,$(FINE_TEST_ROOT),test)

train-fine: train-fine-data
	$(PY) pipeline/train_fine.py --ckpt $(TC_RUNS)/s$(SEED)/best.pt --root $(FINE_ROOT) --runs_dir $(FINE_RUNS) \
		--name s$(SEED) --seed $(SEED) $(if $(wildcard $(FINE_RUNS)/s$(SEED)/last.pt),--resume,)
	$(MAKE) train-fine-eval

# the fine stage (auto: 1/2 at 1152x768; and 1/4, the factor of 1080p) vs the dense pass and the fallback (the
# whole refiner in tiles), mask-stage and accurate guides, full resolution
train-fine-eval:
	for g in files accurate; do o=$(FINE_RUNS)/eval_s$(SEED)/$$g; \
		$(PY) pipeline/evaluate.py --root $(FINE_TEST_ROOT) --split test --guide_mode $$g --ckpt $(FINE_RUNS)/s$(SEED)/fine.pt \
			--labels fine_auto --out $$o/fine_auto && \
		$(PY) pipeline/evaluate.py --root $(FINE_TEST_ROOT) --split test --guide_mode $$g --ckpt $(FINE_RUNS)/s$(SEED)/fine.pt \
			--labels fine_r025 --downsample_ratio 0.25 --baselines guide --out $$o/fine_r025 && \
		$(PY) pipeline/evaluate.py --root $(FINE_TEST_ROOT) --split test --guide_mode $$g --ckpt $(TC_RUNS)/s$(SEED)/best.pt \
			--labels dense --dense --baselines guide --out $$o/dense && \
		$(PY) pipeline/evaluate.py --root $(FINE_TEST_ROOT) --split test --guide_mode $$g --ckpt $(TC_RUNS)/s$(SEED)/best.pt \
			--labels fallback --baselines guide --out $$o/fallback || exit 1; done

# 1080p, the size bench_refiner times: data/hd (the demo generator at 1920x1080, 3 test clips of 6 frames, every
# stage; ~6 minutes) and the default path there (auto: a 1/4 coarse pass and the fine stage) for the three seeds,
# beside the dense pass, the guide and closed form; mask-stage and accurate guides. Closed form on 2-Mpixel frames
# is the slow part (~1 min a frame).
HD_ROOT ?= data/hd
FINE_SEEDS ?= 0 1 2
hd-data: venv
	$(PY) preprocess/make_demo_data.py --root $(HD_ROOT) --split test --size 1920x1080 --frames 6 --seed $(SEED)
	$(call stages,$(HD_ROOT),test)

hd-eval: hd-data
	for g in files accurate; do o=$(FINE_RUNS)/eval_hd/$$g; \
		$(PY) pipeline/evaluate.py --root $(HD_ROOT) --split test --guide_mode $$g \
			--ckpt $(foreach s,$(FINE_SEEDS),$(FINE_RUNS)/s$(s)/fine.pt) --labels $(foreach s,$(FINE_SEEDS),sparse) \
			--out $$o/sparse && \
		$(PY) pipeline/evaluate.py --root $(HD_ROOT) --split test --guide_mode $$g --dense --baselines guide \
			--ckpt $(foreach s,$(FINE_SEEDS),$(TC_RUNS)/s$(s)/best.pt) --labels $(foreach s,$(FINE_SEEDS),dense) \
			--out $$o/dense || exit 1; done

# ---------------------------------------------------------------------------------------------------------------
# make ablation-cpu: the research answer, the learned grid (make ablation-learned, below: 3200 steps, ~4.2 hours).
# make ablation-cpu-quick: the first, 500-step grid (no variant leaves its guide at that budget: a smoke test of the
# grid, not an answer). Does the wavelet branch use defocus? 36 runs: variants none light heavy_db2 x seeds 0 1 2 x
# trees frames (defocused) and frames_sharp (all in focus) x sets standard ($(DEMO_ROOT)) and camouflage
# ($(CAMO_ROOT): make_demo_data --camouflage, backgrounds made of each clip's own person, so colour cannot separate
# them), all with one budget (pipeline/ablation.py --cpu: make train-cpu's recipe at 500 steps), two runs at a time
# with one thread each; finished runs are reused and killed ones resumed, so rerun it after an interruption.
# Writes $(ABL_OUT)/RESULTS.md (+ stats.json, ablation.png). About an hour on 2 cores, within 90 (README,
# section 9).
# `python pipeline/ablation.py --cpu --dry-run` lists the grid and what is done; ABL_ARGS="--variants none light heavy_db1 heavy_db2
# heavy_db4" adds the other wavelets.
CAMO_ROOT ?= data/camo
ABL_OUT   ?= runs/ablation-cpu
ABL_ARGS  ?=
ablation-cpu: ablation-learned

ablation-cpu-quick: demo-masks
	$(PY) preprocess/make_demo_data.py --root $(CAMO_ROOT) --camouflage --seed $(SEED)
	$(PY) preprocess/compose_video_bg.py --root $(CAMO_ROOT) --seed $(SEED)
	$(PY) preprocess/depth.py --root $(CAMO_ROOT) --seed $(SEED)
	PYTHON=$(PY) ./run_blur.sh --root $(CAMO_ROOT) --seed $(SEED)
	$(PY) preprocess/frame_extraction.py --root $(CAMO_ROOT) --seed $(SEED)
	$(PY) preprocess/frame_extraction.py --root $(CAMO_ROOT) --seed $(SEED) --source composed
	$(PY) preprocess/guide_mask.py --root $(CAMO_ROOT) --seed $(SEED) --mode all_frames $(MASK_ARGS)
	$(PY) preprocess/guide_mask.py --root $(CAMO_ROOT) --seed $(SEED) --mode all_frames --tree frames_sharp $(MASK_ARGS)
	$(PY) pipeline/ablation.py --cpu --root $(DEMO_ROOT) --camo_root $(CAMO_ROOT) --out $(ABL_OUT) $(ABL_ARGS)

# ---------------------------------------------------------------------------------------------------------------
# make ablation-learned: the research answer at the budget every variant learns in (issue "The research answer";
# results/ablation_learned/calibration: 3200 steps). The same 36 runs as ablation-cpu, make train-cpu's recipe, on
# make train-cpu's training set ($(TC_ROOT), plus a test split and the all-in-focus tree) and a camouflage set of its
# size ($(LRN_CAMO)); each run scored as soon as it has trained, on its test split and on the real photographs
# (data/real_alpha, when there), and committed with its evaluation (never checkpoints: those stay in $(LRN_RUNS)),
# so a stopped grid loses nothing and a later start, on any machine, continues. The grid is pinned to the commit it
# started from (results/ablation_learned/grid.json): run it from a git worktree at that commit so work goes on in
# main. About 14 minutes per pair of runs on 2 cores: ~4.2 hours. LRN_COMMIT= leaves the results uncommitted.
LRN_CAMO   ?= data/camo-cpu
LRN_RUNS   ?= runs/ablation-learned
LRN_OUT    ?= results/ablation_learned
LRN_COMMIT ?= --commit
ablation-learned-data: train-cpu-data
	$(PY) preprocess/make_demo_data.py --root $(TC_ROOT) --split test --seed $(SEED)
	$(PY) preprocess/make_demo_data.py --root $(LRN_CAMO) --split train --scale 5 --frames 12 --camouflage --seed $(SEED)
	$(PY) preprocess/make_demo_data.py --root $(LRN_CAMO) --split test --camouflage --seed $(SEED)
	for r in $(TC_ROOT) $(LRN_CAMO); do \
		$(PY) preprocess/compose_video_bg.py --root $$r --seed $(SEED) && \
		$(PY) preprocess/depth.py --root $$r --seed $(SEED) && \
		PYTHON=$(PY) ./run_blur.sh --root $$r --seed $(SEED) && \
		$(PY) preprocess/frame_extraction.py --root $$r --seed $(SEED) && \
		$(PY) preprocess/frame_extraction.py --root $$r --seed $(SEED) --source composed && \
		$(PY) preprocess/guide_mask.py --root $$r --seed $(SEED) --mode all_frames --backend perturb && \
		$(PY) preprocess/guide_mask.py --root $$r --seed $(SEED) --mode all_frames --tree frames_sharp --backend perturb \
		|| exit 1; done

ablation-learned: ablation-learned-data
	$(PY) pipeline/ablation.py --learned --root $(TC_ROOT) --camo_root $(LRN_CAMO) --runs_dir $(LRN_RUNS) \
		--out $(LRN_OUT) $(LRN_COMMIT) $(ABL_ARGS)
