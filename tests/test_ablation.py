"""ablation.py: every (tree, variant, seed) trained with one budget, scored, tabulated; reruns reuse runs."""
import pytest

from pipeline import ablation
from tests.train_helpers import make_tiny_frames, repo_on_pythonpath
from utils.cli import run_main

repo_on_pythonpath()


def test_tiny_ablation_table_plot_and_rerun(tmp_path, caplog):
    root = tmp_path / "data"
    for tree in ("frames", "frames_sharp"):
        make_tiny_frames(root, "train", clips=("a", "b"), n_frames=2, size=(32, 40), tree=tree)
        make_tiny_frames(root, "test", clips=("t",), n_frames=2, size=(32, 40), tree=tree, seed=1)
    argv = ["--root", str(root), "--out", str(tmp_path / "abl"), "--tiny", "--steps", "4", "--crop", "32",
            "--baselines", "guide", "--", "--threads", "1"]
    assert ablation.main(argv) == 0
    text = (tmp_path / "abl" / "RESULTS.md").read_text()
    for part in ("### frames (defocused)", "### frames_sharp (all-in-focus control)", "| none |", "| light |",
                 "| guide |", "DWT effect", "MAD unk. (x1e3)", "steps 4,", "seeds [0]"):
        assert part in text, part
    assert (tmp_path / "abl" / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    # 4 steps never open the gate: the report says its rows are the guide's, not a finding about the DWT
    assert "**This budget does not answer the question:** every variant returned its guide unchanged" in text
    for tree in ("frames", "frames_sharp"):
        for v in ("none", "light"):
            assert (tmp_path / "abl" / "runs" / f"{tree}_{v}_s0" / "last.pt").is_file()
    caplog.clear()
    with caplog.at_level("INFO"):  # a rerun reuses the finished runs
        assert ablation.main(argv) == 0
    assert "finished earlier" in caplog.text
    # a smaller budget on the finished grid: refused, not a report saying "steps 2" about 4-step models
    before = {p: p.read_bytes() for p in (tmp_path / "abl").rglob("*") if p.is_file() and p.suffix in (".md", ".yaml")}
    with pytest.raises(ablation.UserError, match="has trained 4 steps, more than --steps 2"):
        ablation.main([a if a != "4" else "2" for a in argv])
    assert all(p.read_bytes() == b for p, b in before.items())


def test_missing_control_tree_is_one_line(tmp_path, capsys):
    root = make_tiny_frames(tmp_path / "data", "train", clips=("a", "b"))
    with pytest.raises(SystemExit):
        run_main(ablation.main, ["--root", str(root), "--out", str(tmp_path / "abl"), "--tiny"])
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no clips in") and "\n" not in err and not (tmp_path / "abl").exists()


def test_miniature_grid_parallel_report_matches_scipy(tmp_path, caplog):
    """2 seeds x 2 variants x 1 tree x 1 set, two runs at a time in subprocesses: the report's statistics equal
    scipy's (Wilcoxon) and numpy's (bootstrap, same seed) on the per-frame numbers the evaluation wrote."""
    import csv
    import json

    import numpy as np
    from scipy.stats import wilcoxon

    root = tmp_path / "data"
    make_tiny_frames(root, "train", clips=("a", "b"), n_frames=2, size=(32, 40))
    make_tiny_frames(root, "test", clips=("t", "u"), n_frames=4, size=(32, 40), seed=1)
    out = tmp_path / "abl"
    # an open gate, under either rule the untrained trust head picks: the untrained variants' mattes differ from
    # the guide (and from each other: --no_ring_samples, else an accurate-ruled ring takes the same local samples
    # for every variant)
    argv = ["--root", str(root), "--out", str(out), "--tiny", "--steps", "3", "--crop", "32", "--seeds", "0", "1",
            "--trees", "frames", "--baselines", "guide", "--jobs", "2", "--n_boot", "500", "--no_ring_samples", "--",
            "--gate_threshold", "0", "--flip_threshold", "0", "--accurate_gate_threshold", "0"]
    assert ablation.main(argv) == 0
    text = (out / "RESULTS.md").read_text()
    assert "## Paired tests" in text and "Focus map vs the true blur" in text
    for name in ("frames_none_s0", "frames_none_s1", "frames_light_s0", "frames_light_s1"):
        assert (out / "logs" / f"{name}.log").is_file() and (out / "runs" / name / "last.pt").is_file()
    # independent recomputation from per_frame.csv: seed-mean per frame, light minus none, paired by frame
    per = {}
    for r in csv.DictReader(open(out / "eval_frames" / "per_frame.csv")):
        per.setdefault(r["method"], {}).setdefault((r["clip"], r["frame"]), []).append(float(r["mad_unknown"]))
    keys = sorted(per["none"], key=str)
    assert len(keys) == 8 and all(len(per["light"][k]) == 2 for k in keys)  # 2 clips x 4 frames, 2 seeds
    d = np.array([np.mean(per["light"][k]) - np.mean(per["none"][k]) for k in keys])
    got = next(r for r in json.loads((out / "stats.json").read_text())["paired"]
               if r["variant"] == "light" and r["metric"] == "mad_unknown")
    assert got["n"] == 8 and got["mean"] == pytest.approx(d.mean()) and np.all(d != 0)
    assert got["p"] == pytest.approx(wilcoxon(d).pvalue)
    idx = np.random.default_rng(0).integers(0, 8, (500, 8))
    assert (got["ci_lo"], got["ci_hi"]) == pytest.approx(tuple(np.percentile(d[idx].mean(1), [2.5, 97.5])))
    assert f"| standard | frames | light | mad_unknown | {d.mean():+.3f} |" in text
    assert f"[{got['ci_lo']:+.3f}, {got['ci_hi']:+.3f}]" in text
    # a rerun reuses every run and the evaluation, and reports the same numbers
    before = (out / "stats.json").read_text()
    caplog.clear()
    with caplog.at_level("INFO"):
        assert ablation.main(argv) == 0
    assert caplog.text.count("finished earlier") == 4 and "evaluated earlier" in caplog.text
    assert (out / "stats.json").read_text() == before


def test_dry_run_lists_the_cpu_grid(tmp_path, capsys):
    out = tmp_path / "abl"
    (out / "runs" / "frames_none_s0").mkdir(parents=True)
    (out / "runs" / "frames_none_s0" / "last.pt").write_bytes(b"x")
    (out / "runs" / "frames_light_s0").mkdir(parents=True)
    (out / "runs" / "frames_light_s0" / "last.json").write_text('{"step": 500}')
    assert ablation.main(["--cpu", "--dry-run", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 37 and lines[-1].startswith("36 runs (1 done, 1 partial, 34 todo)")
    (out / "runs" / "frames_none_s0" / "last.json").write_text('{"step": 5')  # a write a kill cut short
    assert ablation.main(["--cpu", "--dry-run", "--out", str(out)]) == 0  # no traceback: the checkpoint decides
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("36 runs (1 done, 1 partial, 34 todo)")
    assert sum("set=camouflage" in x for x in lines) == 18 and sum("variant=heavy_db2" in x for x in lines) == 12
    assert any(x.startswith("frames_none_s0 ") and x.endswith("partial") for x in lines)
    assert any(x.startswith("camouflage_frames_sharp_heavy_db2_s2 ") and x.endswith("todo") for x in lines)
    assert not (out / "RESULTS.md").exists()


def test_paired_tests_pair_frames_across_trees():
    """The interaction pairs the same clip and frame across trees, after averaging each frame over the seeds."""
    import numpy as np

    def runs(values):  # {run: {(clip, frame): {...}}}
        return {f"s{i}": {k: {"mad_unknown": v[i], "mad": v[i], "focus_sigma_spearman": np.nan}
                          for k, v in values.items()} for i in range(2)}
    keys = [("c", f"{f:04d}.png") for f in range(3)]
    frames = {("standard", "frames"): {"none": runs({k: (1.0, 3.0) for k in keys}),
                                       "light": runs({k: (0.0, 1.0 + i) for i, k in enumerate(keys)})},
              ("standard", "frames_sharp"): {"none": runs({k: (2.0, 2.0) for k in keys}),
                                             "light": runs({k: (2.0, 2.0 + i) for i, k in enumerate(keys)})}}
    tests = ablation.paired_tests(frames, ["standard"], ["frames", "frames_sharp"], ["none", "light"], 100)
    d = {(r["tree"], r["metric"]): r["mean"] for r in tests["paired"]}
    assert d[("frames", "mad_unknown")] == pytest.approx(np.mean([0.5 - 2, 1 - 2, 1.5 - 2]))
    assert d[("frames_sharp", "mad")] == pytest.approx(np.mean([0, 0.5, 1]))
    inter = tests["interaction"][0]
    assert inter["n"] == 3 and inter["mean"] == pytest.approx(np.mean([-1.5 - 0, -1 - 0.5, -0.5 - 1]))


def test_returned_the_guide_names_only_variants_scoring_exactly_the_guide_everywhere():
    """A variant is flagged only when every run, in every tree, has the guide's scores on every reported metric
    (NaN where the guide has NaN); one differing run or tree clears it."""
    def row(mad, unknown=float("nan")):
        return {k: (unknown if k.endswith("unknown") else mad) for k in ablation.REPORT}

    guide = {"guide": [row(40.0)]}
    results = {"frames": {**guide, "none": [row(40.0), row(40.0)], "light": [row(40.0), row(39.5)]},
               "frames_sharp": {**guide, "none": [row(40.0), row(40.0)], "light": [row(40.0), row(40.0)]}}
    assert ablation.returned_the_guide(results, ["frames", "frames_sharp"], ["none", "light"]) == ["none"]
    results["frames_sharp"]["none"][1] = row(40.0, unknown=3.0)
    assert ablation.returned_the_guide(results, ["frames", "frames_sharp"], ["none", "light"]) == []
    assert ablation.returned_the_guide(results, ["frames"], ["none", "light"]) == ["none"]


@pytest.mark.parametrize("flag,value", [("--steps", "0"), ("--jobs", "0"), ("--n_boot", "-1"), ("--crop", "nan"),
                                        ("--max_frames", "-1"), ("--eval_long_side", "1e30")])
def test_bad_numbers_are_usage_errors_before_anything_is_written(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exc:
        run_main(ablation.main, ["--out", str(tmp_path / "abl"), "--dry-run", flag, value])
    assert exc.value.code == 64 and f"argument {flag}" in capsys.readouterr().err
    assert not (tmp_path / "abl").exists()


def _empty_repo(repo):
    """A git repository with one empty commit ("start"): where --commit lands the units."""
    import subprocess

    repo.mkdir()
    for cmd in (["init", "-q"], ["config", "user.email", "t@t"], ["config", "user.name", "t"],
                ["commit", "-q", "--allow-empty", "-m", "start"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True)
    return repo


def test_per_run_units_are_scored_and_committed_as_they_finish_and_match_the_joint_evaluation(tmp_path, caplog):
    """--per_run --commit: the baselines, then each run scored as soon as it has trained and committed on its own
    (never a checkpoint); the merged per-frame numbers are the joint evaluation's, and a rerun commits nothing."""
    import csv
    import subprocess

    import numpy as np

    root = tmp_path / "data"
    make_tiny_frames(root, "train", clips=("a", "b"), n_frames=2, size=(32, 40))
    make_tiny_frames(root, "test", clips=("t",), n_frames=3, size=(32, 40), seed=1)
    repo = _empty_repo(tmp_path / "repo")
    out, runs_dir = repo / "results" / "abl", tmp_path / "checkpoints"
    common = ["--root", str(root), "--tiny", "--steps", "3", "--crop", "32", "--trees", "frames",
              "--baselines", "guide", "--runs_dir", str(runs_dir), "--n_boot", "200"]
    solver = ["--", "--gate_threshold", "0", "--flip_threshold", "0", "--accurate_guide_prob", "0"]
    assert ablation.main([*common, "--out", str(out), "--per_run", "--commit", "--jobs", "2", *solver]) == 0
    log = subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], capture_output=True, text=True).stdout
    subjects = log.strip().splitlines()
    assert len(subjects) == 6 and subjects[-1] == "start"  # the pin, baselines, two runs (either order), the report
    assert subjects[-2].startswith("ablation abl: the grid starts from ")
    assert subjects[-3] == "ablation abl: baselines of standard/frames"
    assert {s for s in subjects[1:3]} == {"ablation abl: frames_none_s0 (3 steps), its evaluation",
                                          "ablation abl: frames_light_s0 (3 steps), its evaluation"}
    assert subjects[0].startswith("ablation abl: the report")
    tracked = subprocess.run(["git", "-C", str(repo), "ls-files"], capture_output=True, text=True).stdout.split()
    assert "results/abl/eval_runs/frames_light_s0/per_frame.csv" in tracked
    assert "results/abl/RESULTS.md" in tracked and not [f for f in tracked if f.endswith((".pt", ".log"))]
    assert (runs_dir / "runs" / "frames_light_s0" / "last.pt").is_file()

    # the same checkpoints scored together, the old way: the same per-frame numbers
    joint = tmp_path / "joint"
    assert ablation.main([*common, "--out", str(joint), *solver]) == 0

    def rows(path):
        return sorted((r["method"], r["run"], r["clip"], r["frame"], round(float(r["mad"]), 9))
                      for r in csv.DictReader(open(path)))
    assert rows(out / "eval_frames" / "per_frame.csv") == rows(joint / "eval_frames" / "per_frame.csv")
    assert len(rows(out / "eval_frames" / "per_frame.csv")) == 9  # guide, none, light x 3 frames

    caplog.clear()
    with caplog.at_level("INFO"):  # a rerun: every unit reused, nothing new to commit
        assert ablation.main([*common, "--out", str(out), "--per_run", "--commit", "--jobs", "2", *solver]) == 0
    assert caplog.text.count("trained and evaluated earlier") == 2 and "baselines: evaluated earlier" in caplog.text
    again = subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], capture_output=True, text=True).stdout
    assert again == log

    # --report_only: the report from what has landed, no checkpoint needed; partial grids say so
    import json
    import shutil

    shutil.rmtree(runs_dir)
    shutil.rmtree(out / "eval_runs" / "frames_light_s0")
    assert ablation.main([*common, "--out", str(out), "--per_run", "--report_only", *solver]) == 0
    text = (out / "RESULTS.md").read_text()
    assert "**Partial: 1 of 2 runs have landed**" in text and not runs_dir.exists()
    assert "## Did every variant learn?" in text and "## Per clip" in text
    guide = json.loads((out / "eval_baselines" / "standard_frames" / "metrics.json").read_text())
    guide_mad = guide["methods"]["guide"]["mad"]
    none_rows = [r for r in csv.DictReader(open(out / "eval_frames" / "per_frame.csv")) if r["method"] == "none"]
    none_mad = np.mean([float(r["mad"]) for r in none_rows])
    assert f"({none_mad / guide_mad:.2f}x" in text
    assert "| t | " in text  # the one test clip's row
    with pytest.raises(SystemExit):
        run_main(ablation.main, [*common, "--out", str(out), "--report_only"])


def test_commit_without_per_run_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_main(ablation.main, ["--root", str(tmp_path), "--out", str(tmp_path / "abl"), "--tiny", "--commit"])
    err = capsys.readouterr().err.strip()
    assert "--commit needs --per_run" in err and not (tmp_path / "abl").exists()


def test_landed_units_survive_a_new_machine_and_real_photos_are_a_fifth_evaluation(tmp_path, caplog):
    """--per_run --commit with --real_root: every run is also scored on the real photographs (the guide and
    classical matting once), numbers only, never a panel; a later start whose checkpoints are gone (another
    machine) reuses each committed unit instead of training it again, and --learned lists the 36-run grid."""
    import csv
    import shutil
    import subprocess

    import numpy as np

    from utils.images import write_png

    root = tmp_path / "data"
    make_tiny_frames(root, "train", clips=("a", "b"), n_frames=2, size=(32, 40))
    make_tiny_frames(root, "test", clips=("t",), n_frames=2, size=(32, 40), seed=1)
    yy, xx = np.mgrid[:48, :48].astype(np.float32)
    alpha = np.clip((14 - np.hypot(yy - 24, xx - 20)) / 3 + 0.5, 0, 1).astype(np.float32)
    image = (alpha[..., None] * np.array([0.8, 0.6, 0.5]) + (1 - alpha[..., None]) * 0.2).astype(np.float32)
    real = tmp_path / "real"
    write_png(real / "p" / "image" / "x.png", image)
    write_png(real / "p" / "alpha" / "x.png", alpha, bits=16)
    repo = _empty_repo(tmp_path / "repo")
    out, runs_dir = repo / "results" / "abl", tmp_path / "checkpoints"
    argv = ["--root", str(root), "--tiny", "--steps", "3", "--crop", "32", "--trees", "frames", "--baselines",
            "guide", "--runs_dir", str(runs_dir), "--n_boot", "100", "--out", str(out), "--per_run", "--commit",
            "--real_root", str(real), "--", "--threads", "1"]
    assert ablation.main(argv) == 0
    subjects = subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], capture_output=True,
                              text=True).stdout.strip().splitlines()
    assert "ablation abl: classical matting on the real photographs" in subjects and len(subjects) == 7
    tracked = subprocess.run(["git", "-C", str(repo), "ls-files"], capture_output=True, text=True).stdout.split()
    assert "results/abl/eval_runs/frames_none_s0/real_alpha/per_item.csv" in tracked
    assert "results/abl/eval_baselines/real/real_alpha/per_item.csv" in tracked
    assert not list(out.rglob("real_alpha/*.png"))  # the photos never land in the repository
    per_run = list(csv.DictReader(open(out / "eval_runs" / "frames_light_s0" / "real_alpha" / "per_item.csv")))
    assert {r["method"] for r in per_run} == {"guide", "refiner", "refiner_told"}
    base = list(csv.DictReader(open(out / "eval_baselines" / "real" / "real_alpha" / "per_item.csv")))
    assert {r["method"] for r in base} == {"guide", "closed_form", "shared"}
    text = (out / "RESULTS.md").read_text()
    assert "## Real photographs (a fifth evaluation of every run)" in text and "| standard | frames | light | 1 |" in text
    mean_guide = np.mean([float(r["mad"]) for r in base if r["method"] == "guide" and r["guide_kind"] == "accurate"])
    assert f"| - | - | guide | - | {mean_guide:.2f} |" in text

    shutil.rmtree(runs_dir)  # a new machine: the committed evaluations, no checkpoint
    caplog.clear()
    with caplog.at_level("INFO"):
        assert ablation.main(argv) == 0
    assert caplog.text.count("trained and evaluated earlier") == 2 and not runs_dir.joinpath("runs").exists()
    again = subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], capture_output=True,
                           text=True).stdout.strip().splitlines()
    assert again == subjects  # nothing retrained, nothing new to commit
    with caplog.at_level("INFO"):  # another budget is another unit: trained again
        assert ablation.main([a if a != "3" else "4" for a in argv]) == 0
    assert (runs_dir / "runs" / "frames_light_s0" / "last.pt").is_file()

    # the grid is pinned to the commit it started from: other code is refused in one line, nothing run
    import json

    from utils.cli import UserError
    pin = json.loads((out / "grid.json").read_text())
    assert pin["commit"] == ablation.code_commit()[0] and f"Every run from commit `{pin['commit']}`" in text
    (out / "grid.json").write_text(json.dumps({**pin, "commit": "0" * 40}))
    before = sorted(p.stat().st_mtime_ns for p in out.rglob("*.csv"))
    with pytest.raises(UserError, match="started from commit 0000000000000000000000000000000000000000, this code"):
        ablation.main(argv)
    assert sorted(p.stat().st_mtime_ns for p in out.rglob("*.csv")) == before


def test_dry_run_lists_the_learned_grid(tmp_path, capsys):
    assert ablation.main(["--learned", "--dry-run", "--runs_dir", str(tmp_path / "r"),
                          "--out", str(tmp_path / "abl")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 37 and lines[-1].startswith("36 runs (36 todo); 3200 steps, batch 4, crop 128, 2 at a time")
    assert "data/train-cpu" in lines[-1] and "data/camo-cpu" in lines[-1]


def test_same_code_ignores_results_and_notes_but_not_code(tmp_path):
    """A grid that commits its units into the repository it runs from moves HEAD: those commits (and notes) are
    not a change of code, a changed .py or config is."""
    import subprocess

    repo = _empty_repo(tmp_path / "repo")

    def commit(path, text):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
        subprocess.run(["git", "-C", str(repo), "add", path], check=True)
        subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", path], check=True)
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    start = commit("pipeline/x.py", "a = 1\n")
    results = commit("results/abl/eval_runs/r/per_frame.csv", "mad\n1\n")
    notes = commit("README.md", "notes\n")
    assert ablation.same_code(start, results, repo) and ablation.same_code(start, notes, repo)
    assert not ablation.same_code(start, commit("pipeline/configs/m.yaml", "k: 2\n"), repo)
    assert not ablation.same_code(start, commit("pipeline/x.py", "a = 2\n"), repo)
    assert not ablation.same_code("0" * 40, start, repo)  # an unknown commit is never the same code


def test_answers_draw_no_conclusion_from_a_variant_that_did_not_learn():
    """H1 and H2 lines: the CI decides the verdict, and a variant (or none) above 0.8x its guide gets none."""
    def runs(*mads):
        return [{"mad": m} for m in mads]
    results = {"standard": {"frames": {"guide": runs(50.0), "none": runs(30.0, 32.0), "light": runs(25.0, 27.0)}},
               "camouflage": {t: {"guide": runs(50.0), "none": runs(45.0), "light": runs(30.0)}
                              for t in ("frames", "frames_sharp")}}
    row = {"p": 0.01, "n": 12, "dz": -1.0, "rank_biserial": -0.8}
    tests = {"paired": [{**row, "set": "standard", "tree": "frames", "variant": "light", "metric": "mad",
                         "mean": -5.0, "ci_lo": -7.0, "ci_hi": -3.0},
                        {**row, "set": "camouflage", "tree": "frames", "variant": "light", "metric": "mad",
                         "mean": -1.0, "ci_lo": -3.0, "ci_hi": 1.0}],
             "interaction": [{**row, "set": "camouflage", "variant": "light", "metric": "mad", "mean": -2.0,
                              "ci_lo": -4.0, "ci_hi": -0.5}]}
    text = ablation.answers(results, tests, ["standard", "camouflage"], ["frames", "frames_sharp"], ["none", "light"])
    lines = text.strip().splitlines()
    assert "**H1, light vs none, standard, defocused:** -5.000 [-7.000, -3.000]" in lines[2]
    assert lines[2].endswith("better than `none`")
    assert lines[3].endswith("no conclusion (none did not learn)")  # none at 0.9x its guide on camouflage
    assert "**H2, light, camouflage" in lines[4] and lines[4].endswith("no conclusion (none did not learn)")
    results["camouflage"] = {t: {"guide": runs(50.0), "none": runs(35.0), "light": runs(30.0)}
                             for t in ("frames", "frames_sharp")}
    lines = ablation.answers(results, tests, ["standard", "camouflage"], ["frames", "frames_sharp"],
                             ["none", "light"]).strip().splitlines()
    assert lines[3].endswith("no difference detectable (the CI holds 0)")
    assert lines[4].endswith("the DWT gains more with defocus")
    table = ablation.learned_table(results, ["standard"], ["frames"], ["none", "light"])
    assert "| standard | frames | 50.00 | 31.00 ± 1.41 (0.62x, 2 seeds) | 26.00 ± 1.41 (0.52x, 2 seeds) |" in table
