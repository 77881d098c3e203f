"""scripts/device_check.sh --tiny: every phase of the accelerator check runs on
the CPU and writes its files, with ml_collections imported from the wheel in
third_party/ (the installed one hidden, as on the accelerator machines)."""

import json
import os
import subprocess
import sys

from helpers import REPO
from helpers import load_module

SCRIPT = os.path.join(REPO, "scripts", "device_check.sh")

# Put first on PYTHONPATH, this sitecustomize makes `import ml_collections`
# fail unless a wheel on sys.path provides it.
HIDE_ML_COLLECTIONS = '''
import importlib.abc
import importlib.machinery
import sys


class HideInstalledMlCollections(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "ml_collections":
            return None
        wheels = [p for p in sys.path if p.endswith(".whl")]
        spec = importlib.machinery.PathFinder.find_spec(name, wheels)
        if spec is None:
            raise ModuleNotFoundError("No module named 'ml_collections'", name=name)
        return spec


sys.meta_path.insert(0, HideInstalledMlCollections())
'''


def test_tiny_check_writes_every_phase_without_ml_collections_installed(tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_ML_COLLECTIONS)
    env = dict(os.environ)
    # What a user's machine has: its one CPU device, not conftest's 8.
    env["XLA_FLAGS"] = " ".join(
        flag for flag in env.get("XLA_FLAGS", "").split()
        if not flag.startswith("--xla_force_host_platform_device_count"))
    env["PYTHONPATH"] = os.pathsep.join([str(hide), env.get("PYTHONPATH", "")])
    env["PYTHON"] = sys.executable
    out = tmp_path / "out"
    proc = subprocess.run([SCRIPT, "--tiny", f"--out={out}"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "importing it from" in proc.stdout and "third_party" in proc.stdout

    steps = json.loads((out / "steps.json").read_text())
    assert {row["case"] for row in steps["cases"]} == {"bf16", "utilization"}
    assert all(row["ratio"] > 0 for row in steps["cases"])
    methods = json.loads((out / "methods.json").read_text())
    assert {row["method"] for row in methods["cases"]} == {"sgd", "sam"}
    fmnist = json.loads((out / "fashion_mnist.json").read_text())
    assert fmnist["status"] == "done" and 1 <= fmnist["epochs"] <= 2
    assert fmnist["probe"]["step_seconds"] > 0
    for method in ("sgd", "sam"):
        run = fmnist["runs"][method]
        assert run["exit_code"] == 0 and 0 <= run["test_error"] <= 1
        results = json.loads((out / "runs" / f"fashion_mnist_{method}" /
                              "results.json").read_text())
        assert results["epochs"] == fmnist["epochs"]

    summary = (out / "summary.md").read_text()
    assert "CPU tiny mode" in summary and "not results" in summary
    for heading in ("## Steps (bf16 and float32)", "## Per-method step cost",
                    "## Fashion-MNIST, SGD vs SAM", "Projected time"):
        assert heading in summary
    assert "paper Table 5: WRN-28-10, 200 epochs | 4.57% | 3.98% |" in summary
    log = (out / "device_check.log").read_text()
    assert "phase fashion_mnist" in log and "done:" in log


def test_epochs_fill_what_is_left_of_the_budget():
    """Closed form: 2 runs x (20 s + compile) overhead, then epochs of
    steps x SAM step x (1 + 1 / (SAM/SGD)) x 1.2 safety."""
    check = load_module("scripts/device_check.py")
    # 300 s left, 10 s compiles: 240 s for epochs of 100 x 0.05 x 1.5 x 1.2 = 9 s.
    assert check.choose_epochs(300, steps_per_epoch=100, sam_step_seconds=0.05,
                               sam_over_sgd=2.0, compile_seconds=10,
                               max_epochs=200) == 26
    assert check.choose_epochs(10, steps_per_epoch=100, sam_step_seconds=0.05,
                               sam_over_sgd=2.0, compile_seconds=10,
                               max_epochs=200) == 1
    assert check.choose_epochs(1e6, steps_per_epoch=100, sam_step_seconds=0.05,
                               sam_over_sgd=2.0, compile_seconds=10,
                               max_epochs=200) == 200
