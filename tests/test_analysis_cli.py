"""python -m sam_jax.analysis on a tiny trained run (conftest.py's tiny_run):
every analysis end to end, and bad input that exits 2 and writes nothing."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from helpers import REPO
from helpers import listing
from sam_jax import analysis
from sam_jax.analysis import __main__ as analysis_cli
from sam_jax.analysis import run_io
from sam_jax.errors import BadInputError


def run_cli(*args):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["analyze", *args])
    try:
        analysis_cli.main(["analysis"])
    finally:
        flags.FLAGS.unparse_flags()


def test_cli_end_to_end_on_a_tiny_run(tiny_run, tmp_path):
    # The same run 10 steps earlier: a copy without its latest checkpoint.
    earlier = str(tmp_path / "earlier")
    shutil.copytree(tiny_run, earlier)
    shutil.rmtree(os.path.join(earlier, "checkpoints", "20"))
    before = listing(earlier)
    run_cli(f"--workdir={tiny_run}", "--num_examples=64", "--top_k=3",
            "--num_iterations=8", "--m=16,64", "--landscape_points=5",
            "--landscape_2d_points=3", f"--other_workdir={earlier}")
    assert listing(earlier) == before  # the other run is only read
    with open(os.path.join(tiny_run, "analysis.json")) as f:
        result = json.load(f)
    assert result["step"] == 20 and result["num_examples"] == 64
    top = result["hessian"]["top_eigenvalues"]
    assert len(top) == 3 and top == sorted(top, reverse=True) and top[0] > 0
    assert result["hessian"]["lambda_max_over_lambda_3"] == pytest.approx(top[0] / top[2])
    assert result["msharpness"]["m"] == [16, 64]
    assert all(v >= 0 for v in result["msharpness"]["values"])
    landscape = result["landscape"]
    assert landscape["losses"][landscape["alphas"].index(0.0)] == pytest.approx(
        result["loss"], rel=1e-5)
    assert np.array(landscape["losses_2d"]).shape == (3, 3)
    path = result["interpolation"]
    assert path["other_step"] == 10 and path["alphas"][1:4] == [0.0, 0.5, 1.0]
    assert path["losses"][1] == pytest.approx(result["loss"], rel=1e-5)
    assert path["losses"][3] != pytest.approx(path["losses"][1], rel=1e-3)
    for name in ("hessian_density.png", "msharpness.png", "landscape_1d.png",
                 "landscape_2d.png", "interpolation.png"):
        with open(os.path.join(tiny_run, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(result["plots"]) == sorted(
        p for p in os.listdir(tiny_run) if p.endswith(".png"))
    # A later analysis of another kind keeps the earlier sections.
    run_cli(f"--workdir={tiny_run}", "--what=msharpness", "--num_examples=64", "--m=64",
            "--rho=0")
    with open(os.path.join(tiny_run, "analysis.json")) as f:
        merged = json.load(f)
    assert merged["msharpness"]["values"] == [0.0] and "hessian" in merged
    assert merged["plots"] == result["plots"]
    # The endpoint of the path is the other run's loss, read independently.
    other = run_io.load_run(earlier)
    images, labels = run_io.training_examples(other.config, other.spec, 64)
    other_loss = analysis.mean_loss(run_io.make_loss_fn(other.model, other.batch_stats),
                                    other.params, {"image": images, "label": labels})
    assert path["losses"][3] == pytest.approx(other_loss, rel=1e-5)


def test_cli_bad_input_exits_2_and_writes_nothing(tiny_run, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sam_jax.analysis", f"--workdir={tiny_run}",
         "--what=hessian,curvature"], cwd=REPO, capture_output=True, text=True,
        timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: unknown --what 'curvature'; allowed: hessian, msharpness, landscape")
    no_checkpoint = tmp_path / "no_checkpoint"
    no_checkpoint.mkdir()
    shutil.copy(os.path.join(tiny_run, "config.json"), no_checkpoint)
    with pytest.raises(BadInputError, match="no checkpoint in"):
        run_cli(f"--workdir={no_checkpoint}")
    assert listing(str(no_checkpoint)) == ["config.json"]
    # A config that does not match the checkpoint: one line naming a weight.
    other_model = tmp_path / "other_model"
    shutil.copytree(tiny_run, other_model)
    with open(other_model / "config.json") as f:
        config = json.load(f)
    config["model"]["name"] = "wrn10_2"
    with open(other_model / "config.json", "w") as f:
        json.dump(config, f)
    before = listing(str(other_model))
    with pytest.raises(run_io.RunError, match=r"checkpoint 20 is not a wrn10_2: "
                       r"batch_stats/group0_block0/bn_2/mean has shape"):
        run_io.load_run(str(other_model))
    assert listing(str(other_model)) == before
    # Too many examples, m not dividing them: exit 2, the run untouched.
    before = {p: os.stat(os.path.join(tiny_run, p)).st_mtime_ns
              for p in listing(tiny_run)}
    for args in (["--num_examples=2000", "--m=1"], ["--num_examples=64", "--m=3"]):
        with pytest.raises(BadInputError):  # the CLI's exit 2, one line
            run_cli(f"--workdir={tiny_run}", *args)
    assert {p: os.stat(os.path.join(tiny_run, p)).st_mtime_ns
            for p in listing(tiny_run)} == before
