"""Test set-up: 8 virtual CPU devices, set before JAX starts; fixtures that
several test files share (plain helper functions are in helpers.py)."""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The 8 devices' collectives need 16 XLA threads (sam_jax/cpu_devices.py);
# subprocesses inherit the setting.
from sam_jax import cpu_devices  # noqa: E402  (does not import JAX)
cpu_devices.configure()

# One persistent XLA compilation cache for the session, which the subprocesses
# inherit: the many CLI runs of the same tiny configs (fault, signal and
# resume tests) compile once. A fresh directory: nothing from an earlier
# session or another JAX version is trusted.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(
        prefix="sam_jax_tests_xla_cache_")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Child processes (`python -m sam_jax.main`, scripts) import this checkout
# too, whatever their working directory and whatever else is installed.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

import numpy as np  # noqa: E402  (after the environment is set)
import pytest  # noqa: E402

from helpers import TF_PREFIX  # noqa: E402
from helpers import load_config  # noqa: E402
from helpers import load_module  # noqa: E402
from helpers import tiny_tf_variables  # noqa: E402
from helpers import write_tf_checkpoint  # noqa: E402

_FAULT_ROWS = []


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: a costlier repeat of a path the suite covers; skipped "
        "unless SAM_JAX_SLOW_TESTS=1 (the suite stays under 20 minutes on 2 cores)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("SAM_JAX_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow: SAM_JAX_SLOW_TESTS=1 runs it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def fault_table():
    """Tests record (fault, what happened) rows; with SAM_JAX_FAULT_TABLE=PATH
    the session writes them as a markdown table (the README's fault table)."""
    return _FAULT_ROWS.append


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("SAM_JAX_FAULT_TABLE")
    if not path or not _FAULT_ROWS:
        return
    lines = ["| fault tried | what happened |", "|---|---|"]
    lines += [f"| {fault} | {outcome} |" for fault, outcome in _FAULT_ROWS]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


# ------------------------------------------------------------ a tiny trained run

@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """WRN-10-1 trained 1 epoch on digits (20 steps, checkpoints at 10 and 20).

    SGD (rho = 0) compiles faster than SAM; the analysis does not care how
    the weights were found.
    """
    from sam_jax import train
    config = load_config("configs/quickstart.py:sgd")
    config.model.name = "wrn10_1"
    config.num_epochs = 1
    config.batch_size = 64
    config.eval_batch_size = 512
    config.checkpoint_every_steps = 10
    workdir = str(tmp_path_factory.mktemp("analysis") / "run")
    train.train_and_evaluate(config, workdir)
    return workdir


# ------------------------------------------------------------ a released TF EfficientNet

@pytest.fixture(scope="session")
def released_checkpoint(tmp_path_factory):
    """A fake released checkpoint: raw weights, their EMA copies (the ones to
    use), an optimizer slot and the step counter; 10 classes."""
    rng = np.random.default_rng(0)
    ema = tiny_tf_variables(rng, num_classes=10)
    tensors = {name: value + 1.0 for name, value in ema.items()}  # raw != EMA
    tensors.update({f"{name}/ExponentialMovingAverage": value
                    for name, value in ema.items()})
    tensors[f"{TF_PREFIX}/stem/conv2d/kernel/RMSProp"] = np.zeros((3, 3, 3, 8), np.float32)
    tensors["global_step"] = np.array(1000, np.int64)
    prefix = str(tmp_path_factory.mktemp("released") / "model.ckpt")
    write_tf_checkpoint(prefix, tensors)
    return prefix, ema


@pytest.fixture(scope="session")
def converted_checkpoint(released_checkpoint, tmp_path_factory):
    """The released checkpoint converted by scripts/convert_efficientnet_checkpoint.py."""
    script = load_module("scripts/convert_efficientnet_checkpoint.py")
    output = str(tmp_path_factory.mktemp("converted") / "efficientnet_tiny.msgpack")
    assert script.main([f"--checkpoint={released_checkpoint[0]}",
                        "--model=efficientnet_tiny", f"--output={output}"]) == 0
    return output
