"""A workdir holds one run: the file layout, and the rules for reusing one.

This module is the one place that names what a run leaves in its workdir;
the trainer, the analysis, finetuning and the reproduction CLI read the names
from here. It imports neither JAX nor TensorFlow, so launchers and `collect`
can use it.

A run restarted in its own workdir resumes; a different config in the same
workdir is refused (it would mix two runs' checkpoints and metrics) unless the
caller asks to overwrite.
"""

import json
import os
import shutil

from sam_jax.errors import BadInputError

# What a run writes (see README, "What a run leaves").
CONFIG_FILE = "config.json"  # the config the run was started with
METRICS_FILE = "metrics.jsonl"  # one JSON object per line: {"step", "split", ...}
RESULTS_FILE = "results.json"  # final metrics; its presence means "finished"
CHECKPOINT_DIR = "checkpoints"  # orbax, one directory per saved step
CORRUPT_CHECKPOINT_DIR = "checkpoints_corrupt"  # unreadable ones, moved aside
TENSORBOARD_DIR = "tensorboard"
LABEL_NOISE_FILE = "label_noise.npz"  # which labels the noise changed
ANALYSIS_FILE = "analysis.json"  # python -m sam_jax.analysis
# Written by the reproduction launchers, not the trainer.
STATUS_FILE = "status.json"  # launcher's record: state, exit code, command
LAUNCH_LOG_FILE = "launch.log"  # the run's stdout and stderr under `launch`

# Keys that change how a run is observed, not what it computes.
OBSERVATION_KEYS = ("log_every_steps", "eval_every_epochs", "checkpoint_every_steps",
                    "eval_batch_size", "data_dir")


def path(workdir: str, name: str) -> str:
    """The path of one of the files above in `workdir`."""
    return os.path.join(workdir, name)


def config_as_dict(config) -> dict:
    return json.loads(config.to_json_best_effort())


_ABSENT = "<absent>"


def _differences(old: dict, new: dict, defaults: dict, prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(old) | set(new)):
        name = prefix + key
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        default = defaults.get(key, _ABSENT) if isinstance(defaults, dict) else _ABSENT
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _differences(a, b, default, name + ".")
        elif a == _ABSENT and b == default:
            continue  # a key added to the schema since; the old run had its default
        elif a != b and name not in OBSERVATION_KEYS:
            diffs.append(f"{name} {a!r} -> {b!r}")
    return diffs


def check_workdir(config, workdir: str, overwrite: bool) -> None:
    """Refuses a workdir holding another config's run; clears it on overwrite.

    Nothing is written or removed unless `overwrite` is set.
    """
    from sam_jax.config_schema import base_config  # ml_collections: only here

    config_path = path(workdir, CONFIG_FILE)
    if not os.path.exists(config_path):
        return
    with open(config_path) as f:
        old = json.load(f)
    diffs = _differences(old, config_as_dict(config), config_as_dict(base_config()))
    if not diffs:
        return
    if not overwrite:
        raise BadInputError(
            f"workdir {workdir!r} holds a run with a different config "
            f"({'; '.join(diffs[:3])}{'; ...' if len(diffs) > 3 else ''}); use "
            "another workdir, or --overwrite to delete that run")
    shutil.rmtree(workdir)


def write_config(config, workdir: str) -> None:
    with open(path(workdir, CONFIG_FILE), "w") as f:
        f.write(config.to_json_best_effort(indent=2))


def trim_metrics(workdir: str, last_step: int) -> None:
    """Drops metric rows written after `last_step` by a run that was cut short.

    After a resume from the checkpoint at `last_step`, those steps are run
    again and logged again; keeping the old rows would duplicate them.
    """
    metrics_path = path(workdir, METRICS_FILE)
    if not os.path.exists(metrics_path):
        return
    with open(metrics_path) as f:
        rows = [line for line in f if line.strip()]
    kept = [line for line in rows if json.loads(line)["step"] <= last_step]
    if len(kept) != len(rows):
        tmp = metrics_path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, metrics_path)

