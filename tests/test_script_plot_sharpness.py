"""scripts/plot_sharpness.py averages the sharpness runs log."""

import json
import os
import subprocess
import sys

from helpers import REPO
from helpers import load_module
from helpers import write


def test_plot_sharpness_script_averages_runs(tmp_path):
    for seed, scale in enumerate((1.0, 3.0)):
        records = [{"step": 20 * e, "split": "sharpness", "epoch": e,
                    "lambda_max": scale * e, "lambda_max_over_lambda_5": 2.0,
                    "m_sharpness": 0.01 * e} for e in (1, 3)]
        write(str(tmp_path / f"run_sam_seed{seed}" / "metrics.jsonl"),
              "".join(json.dumps(r) + "\n" for r in records))
    plot_sharpness = load_module("scripts/plot_sharpness.py")
    epochs, mean, std = plot_sharpness.curves(
        sorted(str(p) for p in tmp_path.glob("run_sam_seed*")))["lambda_max"]
    assert list(epochs) == [1, 3] and list(mean) == [2.0, 6.0] and list(std) == [1.0, 3.0]
    out = tmp_path / "sharpness.png"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "plot_sharpness.py"),
         f"--out={out}", f"SAM:{tmp_path}/run_sam_seed*", f"SGD:{tmp_path}/nothing*"],
        capture_output=True, text=True)
    assert proc.returncode == 2 and "group 'SGD': no workdir matches" in proc.stderr
    assert not out.exists()
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "plot_sharpness.py"),
         f"--out={out}", f"SAM:{tmp_path}/run_sam_seed*"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:4] == b"\x89PNG"
