"""The device-resident path needs no TensorFlow: `python -m sam_jax.main`
trains and evaluates digits and Fashion-MNIST with tensorflow and
tensorflow_datasets made unimportable (as on the accelerator machines)."""

import json
import os
import subprocess
import sys

import pytest

from helpers import REPO

BLOCK_AND_RUN = """
import sys
sys.modules["tensorflow"] = None  # any import of it now fails
sys.modules["tensorflow_datasets"] = None
from sam_jax import main
sys.argv = ["sam_jax.main"] + sys.argv[1:]
try:
    main.run()
finally:
    assert not any(name.split(".")[0] in ("tensorflow", "tensorflow_datasets")
                   and module is not None for name, module in sys.modules.items())
"""


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="apt-get install -y dataset-fashion-mnist")
@pytest.mark.parametrize("config", ["configs/quickstart.py",
                                    "configs/fashion_mnist.py:small"])
def test_trains_and_evaluates_with_tensorflow_unimportable(config, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_AND_RUN, f"--config={config}",
         f"--workdir={tmp_path}", "--config.model.name=wrn10_1",
         "--config.batch_size=32", "--config.num_steps=6", "--config.log_every_steps=3",
         "--config.eval_batch_size=512"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "device input pipeline" in proc.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["steps"] == 6 and 0 <= results["test_error"] < 1
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert {row["split"] for row in rows} == {"train", "eval"}


WATCH_AND_RUN = """
import sys
from sam_jax import main
sys.argv = ["sam_jax.main"] + sys.argv[1:]
main.run()
assert "tensorflow" not in sys.modules, "the run imported tensorflow"
"""


def test_installed_tensorflow_is_not_imported_and_tensorboard_events_are_written(
        tmp_path):
    pytest.importorskip("tensorflow")  # installed, importable: still not imported
    pytest.importorskip("tensorboard")
    proc = subprocess.run(
        [sys.executable, "-c", WATCH_AND_RUN, "--config=configs/quickstart.py",
         f"--workdir={tmp_path}", "--config.model.name=wrn10_1",
         "--config.batch_size=32", "--config.num_steps=4", "--config.log_every_steps=2"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from tensorboard.backend.event_processing import event_accumulator
    events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    losses = [e.value for e in events.Scalars("train/loss")]
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    want = [row["loss"] for row in rows if row["split"] == "train"]
    assert len(losses) == len(want) == 2
    assert losses == pytest.approx(want, rel=1e-6)
