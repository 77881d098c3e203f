"""scripts/compare_analyses.py puts runs' analysis.json side by side."""

import json
import os
import subprocess
import sys


def test_compare_analyses_script_puts_runs_side_by_side(tmp_path):
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "scripts", "compare_analyses.py")
    for label, lmax in (("sgd", 20.0), ("sam", 8.0)):
        (tmp_path / label).mkdir()
        (tmp_path / label / "analysis.json").write_text(json.dumps({
            "step": 300, "loss": 0.01,
            "hessian": {"lambda_max": lmax, "lambda_max_over_lambda_5": lmax / 4},
            "msharpness": {"rho": 0.05, "m": [1, 16], "values": [0.3, 0.1]},
            "interpolation": {"alphas": [-0.5, 0.0, 0.5, 1.0, 1.5],
                              "losses": [9.0, 0.01, 0.5, 0.02, 7.0]}}))
    proc = subprocess.run([sys.executable, script, f"SGD={tmp_path}/sgd",
                           f"SAM={tmp_path}/sam"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "| | SGD | SAM |"
    assert "| lambda_max | 20 | 8 |" in lines
    assert "| lambda_max / lambda_5 | 5 | 2 |" in lines
    assert "| m-sharpness, m=16 (rho 0.05) | 0.1 | 0.1 |" in lines
    # The barrier between the runs: the path's maximum for alpha in [0, 1] only.
    assert "| max loss on the path to the other run | 0.5 | 0.5 |" in lines
    proc = subprocess.run([sys.executable, script, f"SGD={tmp_path}/none"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "SGD=" in proc.stderr and proc.stdout == ""
