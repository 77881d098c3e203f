"""A workdir holds one run: its config, checkpoints, metrics and results.

A run restarted in its own workdir resumes; a different config in the same
workdir is refused (it would mix two runs' checkpoints and metrics) unless the
caller asks to overwrite.
"""

import json
import os
import shutil

from sam_jax.config_schema import base_config
from sam_jax.validate import ConfigError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
# Keys that change how a run is observed, not what it computes.
OBSERVATION_KEYS = ("log_every_steps", "eval_every_epochs", "checkpoint_every_steps",
                    "eval_batch_size", "data_dir")


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
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    with open(path) as f:
        old = json.load(f)
    diffs = _differences(old, config_as_dict(config), config_as_dict(base_config()))
    if not diffs:
        return
    if not overwrite:
        raise ConfigError(
            f"workdir {workdir!r} holds a run with a different config "
            f"({'; '.join(diffs[:3])}{'; ...' if len(diffs) > 3 else ''}); use "
            "another workdir, or --overwrite to delete that run")
    shutil.rmtree(workdir)


def write_config(config, workdir: str) -> None:
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
        f.write(config.to_json_best_effort(indent=2))


def trim_metrics(workdir: str, last_step: int) -> None:
    """Drops metric rows written after `last_step` by a run that was cut short.

    After a resume from the checkpoint at `last_step`, those steps are run
    again and logged again; keeping the old rows would duplicate them.
    """
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip()]
    kept = [line for line in rows if json.loads(line)["step"] <= last_step]
    if len(kept) != len(rows):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, path)
