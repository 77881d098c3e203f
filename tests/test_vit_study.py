"""experiments/vit_fashion_mnist/study.py: collect and its table from the runs'
results.json files (partial studies too), and its one-line bad input."""

import json
import statistics
import subprocess
import sys

import pytest

from helpers import REPO
from experiments.vit_fashion_mnist import study


@pytest.fixture
def fake_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(study, "RECORD", str(tmp_path / "results.json"))  # none yet

    def write(method, seed, error, seconds=10.0):
        path = tmp_path / "runs" / f"{method}_seed{seed}"
        path.mkdir(parents=True)
        (path / "results.json").write_text(json.dumps({
            "test_error": error, "test_loss": 1.0, "steps": 468,
            "gradient_evaluations": 936.0 if method == "sam" else 468.0,
            "train_seconds": seconds}))
    return write


def test_collect_summarises_and_pairs_by_seed(fake_runs):
    adamw, sam = [0.20, 0.22, 0.21], [0.19, 0.23, 0.18]
    for seed in range(3):
        fake_runs("adamw", seed, adamw[seed])
        fake_runs("sam", seed, sam[seed], seconds=20.0)
    collected = study.collect()
    for method, errors in (("adamw", adamw), ("sam", sam)):
        s = collected["summary"][method]
        assert s["seeds"] == 3
        assert s["mean_test_error"] == pytest.approx(statistics.mean(errors))
        assert s["std_test_error"] == pytest.approx(statistics.stdev(errors))
    assert collected["paired"]["sam_minus_adamw"] == pytest.approx([-0.01, 0.01, -0.03])
    assert collected["paired"]["sam_lower"] == 2
    text = study.table(collected)
    assert "| AdamW | 3 | 21.00 | 1.00 | 20.00, 22.00, 21.00 | 10 |" in text
    assert "-1.00, +1.00, -3.00 points; mean -1.00; SAM lower on 2 of 3 seeds" in text


def test_a_partial_study_collects_what_finished(fake_runs):
    fake_runs("adamw", 0, 0.25)
    fake_runs("adamw", 1, 0.27)
    fake_runs("sam", 0, 0.24)
    collected = study.collect()
    assert collected["summary"]["sam"]["std_test_error"] is None  # one seed
    assert collected["paired"]["seeds"] == [0]
    assert "SAM lower on 1 of 1 seeds" in study.table(collected)


def test_an_unknown_seed_exits_2_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "experiments.vit_fashion_mnist.study",
                           "run", "--seeds=0,7"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --seeds: 7 is not one of the study's seeds 0, 1, 2"]


def test_runs_without_a_workdir_come_from_the_committed_record(fake_runs, tmp_path):
    fake_runs("adamw", 0, 0.25)
    fake_runs("sam", 0, 0.24)
    (tmp_path / "results.json").write_text(json.dumps(study.collect()))
    for path in (tmp_path / "runs").glob("*/results.json"):
        path.unlink()  # a fresh checkout: no run directories
    collected = study.collect()
    assert [(r["method"], r["seed"], r["test_error"]) for r in collected["runs"]] == [
        ("adamw", 0, 0.25), ("sam", 0, 0.24)]
