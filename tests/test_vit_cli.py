"""The ViT configs from the command line, on 1 and on 8 virtual devices:
configs/fashion_mnist_vit.py (offline data) as it is, shrunk to 2 steps, and
configs/imagenet_vit.py with its optimizer, SAM and schedule but the micro
ViT on Fashion-MNIST (ImageNet is not on this machine; its data path is the
ResNets', tested on mock tfds in test_configs.py and test_train.py)."""

import json
import os
import subprocess
import sys

import pytest

from helpers import REPO

SHRINK = ["--config.num_steps=2", "--config.batch_size=16", "--config.train_subset=64",
          "--config.eval_batch_size=1000", "--config.log_every_steps=1",
          "--config.optimizer.warmup_steps=1"]


def run(tmp_path, devices, *args):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.run([sys.executable, "-m", "sam_jax.main", f"--workdir={tmp_path}",
                           *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=env)


# Each run takes 1-2 minutes on 2 busy cores: one per config in the suite
# (one on 1 device, one on 8), the other pairing with SAM_JAX_SLOW_TESTS=1.
RUNS = [("configs/fashion_mnist_vit.py:sam", 1),
        ("configs/imagenet_vit.py:vit_b16,sam", 8),
        ("configs/fashion_mnist_vit.py:adamw", 8),
        ("configs/imagenet_vit.py:vit_s16,adamw", 1)]


@pytest.mark.parametrize("config, devices", [
    pytest.param(*run, marks=() if run in RUNS[:2] else pytest.mark.slow) for run in RUNS])
def test_vit_config_trains_from_the_cli(tmp_path, config, devices):
    extra = []
    if "imagenet" in config:
        extra = ["--config.dataset=fashion_mnist", "--config.model.name=vit_micro4",
                 "--config.image_size=16"]
    proc = run(tmp_path, devices, f"--config={config}", *SHRINK, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{devices} devices" in proc.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["steps"] == 2 and 0 <= results["test_error"] <= 1
    # SAM: two gradient evaluations a step; AdamW alone: one.
    assert results["gradient_evaluations"] == (4 if config.endswith("sam") else 2)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["optimizer"]["name"] == "adamw"


def test_a_bad_adam_setting_exits_2_with_one_line(tmp_path):
    proc = run(tmp_path / "run", 1, "--config=configs/fashion_mnist_vit.py",
               "--config.optimizer.b2=1.5")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["error: optimizer.b2=1.5 must be a finite number in [0, 1)"], lines
    assert not (tmp_path / "run").exists()
