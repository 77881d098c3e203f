"""A workdir holds one run: the file layout, and the rules for reusing one.

This module is the one place that names what a run leaves in its workdir;
the trainer, the analysis, finetuning and the reproduction CLI read the names
from here. It imports neither JAX nor TensorFlow, so launchers and `collect`
can use it.

The rules, so that no state a crash can leave is a dead end:
- One run per workdir: a run holds an exclusive lock (fcntl.flock) on
  LOCK_FILE while it runs; a second run is refused, naming the holder. The
  operating system releases the lock when its process dies, so a lock left
  by a killed run never blocks the resume.
- The files are written atomically (a temporary file renamed into place), and
  metrics.jsonl, the one append-only log, is read tolerantly: a last line cut
  short by a kill is dropped, with a warning.
- A run restarted in its own workdir resumes; a different config in a workdir
  holding a run (a checkpoint or results) is refused unless the caller asks
  to overwrite, which removes only the files named here: a directory's other
  files are never touched, and a config.json that is not sam_jax's is refused.
- A workdir whose run never reached a checkpoint holds nothing to resume: a
  corrected command may take it.
"""

import contextlib
import errno
import fcntl
import glob
import json
import os
import shutil
import socket
import sys
import tempfile
from typing import Optional

from sam_jax.errors import BadInputError

# What a run writes (see docs/trainer.md, "What a run leaves in its workdir").
CONFIG_FILE = "config.json"  # the config the run was started with
METRICS_FILE = "metrics.jsonl"  # one JSON object per line: {"step", "split", ...}
RESULTS_FILE = "results.json"  # final metrics; its presence means "finished"
CHECKPOINT_DIR = "checkpoints"  # orbax, one directory per saved step
# The config the checkpoints were written under, kept apart from config.json
# (which a corrected command may replace) and outside CHECKPOINT_DIR, which
# holds orbax's step directories only.
CHECKPOINT_CONFIG_FILE = "checkpoints_config.json"
CORRUPT_CHECKPOINT_DIR = "checkpoints_corrupt"  # unreadable ones, moved aside
TENSORBOARD_DIR = "tensorboard"  # TensorBoard event files
LABEL_NOISE_FILE = "label_noise.npz"  # which labels the noise changed
ANALYSIS_FILE = "analysis.json"  # python -m sam_jax.analysis
ANALYSIS_PLOTS = ("hessian_density.png",  # the analysis's plots
                  "msharpness.png", "landscape_1d.png",
                  "landscape_2d.png", "interpolation.png")
LOCK_FILE = ".lock"  # held by the run in progress (with its host and pid)
# Written by the reproduction launchers, not the trainer.
STATUS_FILE = "status.json"  # launcher's record: state, exit code, command
LAUNCH_LOG_FILE = "launch.log"  # the run's stdout and stderr under `launch`

# Everything above: what --overwrite may remove (and their temporary files).
OWN_FILES = (CONFIG_FILE, METRICS_FILE, RESULTS_FILE, CHECKPOINT_DIR, CHECKPOINT_CONFIG_FILE,
             CORRUPT_CHECKPOINT_DIR, TENSORBOARD_DIR, LABEL_NOISE_FILE, ANALYSIS_FILE,
             *ANALYSIS_PLOTS, STATUS_FILE, LAUNCH_LOG_FILE)
# Keys every sam_jax config has (config_schema.base_config): a config.json
# without them was written by something else.
_CONFIG_MARKERS = ("dataset", "model", "optimizer", "sam", "seed", "batch_size")
# Keys that change how a run is observed, not what it computes.
OBSERVATION_KEYS = ("log_every_steps", "eval_every_epochs", "checkpoint_every_steps",
                    "eval_batch_size", "data_dir")


def path(workdir: str, name: str) -> str:
    """The path of one of the files above in `workdir`."""
    return os.path.join(workdir, name)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------ writing safely

def write_text_atomic(file_path: str, text: str) -> None:
    """`text` into `file_path` through a temporary file and a rename: a kill
    leaves the old file or the new one, never half of one."""
    directory = os.path.dirname(os.path.abspath(file_path))
    handle, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(file_path),
                                   suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, file_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_json_atomic(file_path: str, value) -> None:
    write_text_atomic(file_path, json.dumps(value, indent=2) + "\n")


def read_json(file_path: str):
    """The JSON value in `file_path`, or None if it is missing, empty or torn."""
    try:
        with open(file_path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_results(workdir: str) -> Optional[dict]:
    """results.json, or None: a run is finished only if this reads."""
    results = read_json(path(workdir, RESULTS_FILE))
    return results if isinstance(results, dict) else None


def read_metrics(workdir: str, *, warn_torn: bool = True) -> list[dict]:
    """The rows of metrics.jsonl. A last line cut short by a kill is dropped
    (with a warning); an unreadable line elsewhere is dropped too."""
    metrics_path = path(workdir, METRICS_FILE)
    try:
        with open(metrics_path) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or "step" not in row:
            if warn_torn:
                warn(f"{metrics_path} line {number} is cut short or damaged; dropped")
            continue
        rows.append(row)
    return rows


def trim_metrics(workdir: str, last_step: int, *, final_evaluation: bool = False
                 ) -> None:
    """Keeps the metric rows up to `last_step` (a resumed run logs the later
    steps again) and drops damaged lines; with `final_evaluation`, also the
    evaluation rows at `last_step` (the run evaluates there again)."""
    metrics_path = path(workdir, METRICS_FILE)
    if not os.path.exists(metrics_path):
        return
    rows = read_metrics(workdir)
    kept = [row for row in rows if row["step"] < last_step or (
        row["step"] == last_step and not (final_evaluation
                                          and row.get("split", "").endswith("eval")))]
    text = "".join(json.dumps(row) + "\n" for row in kept)
    with open(metrics_path) as f:
        if f.read() == text:
            return
    write_text_atomic(metrics_path, text)


# ------------------------------------------------------------ the config

def config_as_dict(config) -> dict:
    return json.loads(config.to_json_best_effort())


def is_sam_jax_config(value) -> bool:
    return isinstance(value, dict) and all(key in value for key in _CONFIG_MARKERS)


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


def holds_run(workdir: str) -> bool:
    """Whether `workdir` holds something to resume or keep: a checkpoint (even
    one moved aside as corrupt) or results."""
    for name in (CHECKPOINT_DIR, CORRUPT_CHECKPOINT_DIR):
        directory = path(workdir, name)
        if os.path.isdir(directory) and any(d.split(".")[0].isdigit()
                                            for d in os.listdir(directory)):
            return True
    return os.path.exists(path(workdir, RESULTS_FILE))


def check_workdir(config, workdir: str, overwrite: bool, *,
                  read_only: bool = False) -> None:
    """Refuses a workdir that cannot take this run, before anything is written.

    With `read_only`, only refuses (the trainer checks so before it takes the
    lock, which writes; then again under the lock, where it may remove).

    - not a directory, or not writable: refused;
    - a config.json that is not a sam_jax config: refused, even with
      --overwrite (the directory belongs to something else);
    - another config's run (a checkpoint or results): refused, or removed
      (our files only) with `overwrite`;
    - another config with nothing to resume (a run that failed before its
      first checkpoint): taken over, our files removed;
    - config.json missing or damaged beside our run: the checkpoints' copy
      of the config (CHECKPOINT_CONFIG_FILE) takes its place in the rules
      above; without one, a damaged config.json is replaced by this config
      (the checkpoint's own check refuses a run of another model).
    """
    from sam_jax.config_schema import base_config  # ml_collections: only here

    check_usable(workdir)
    config_path = path(workdir, CONFIG_FILE)
    old = read_json(config_path) if os.path.exists(config_path) else None
    if old is None and holds_run(workdir):
        # config.json lost or damaged: the checkpoints' copy says whose run it
        # is, so another config's run is refused now, not after the data load.
        if checkpoints_config_differences(config, workdir):
            old = read_json(path(workdir, CHECKPOINT_CONFIG_FILE))
        elif os.path.exists(config_path) and not read_only:
            warn(f"{config_path} is empty or damaged; it is rewritten from this "
                 "command's config (the checkpoint is checked against it)")
    if old is None:
        return
    diffs = _differences(old, config_as_dict(config), config_as_dict(base_config()))
    if not diffs:
        return
    if holds_run(workdir) and not overwrite:
        raise BadInputError(
            f"workdir {workdir!r} holds a run with a different config "
            f"({'; '.join(diffs[:3])}{'; ...' if len(diffs) > 3 else ''}); use "
            "another workdir, or --overwrite to delete that run")
    if not read_only:
        remove_run(workdir)


def remove_run(workdir: str) -> None:
    """Removes the files a run writes (OWN_FILES and their temporary files);
    anything else in the directory stays."""
    for name in OWN_FILES:
        target = path(workdir, name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        elif os.path.lexists(target):
            os.remove(target)
    for tmp in glob.glob(path(workdir, "*.tmp*")):
        if os.path.basename(tmp).startswith(tuple(OWN_FILES)):
            os.remove(tmp)


def write_config(config, workdir: str) -> None:
    """config.json, and a copy for the checkpoints: if config.json is lost,
    the checkpoints can still say which config's run they belong to."""
    text = config.to_json_best_effort(indent=2)
    write_text_atomic(path(workdir, CONFIG_FILE), text)
    write_text_atomic(path(workdir, CHECKPOINT_CONFIG_FILE), text)


def checkpoints_config_differences(config, workdir: str) -> list[str]:
    """How the config of the run whose checkpoints are in `workdir` differs
    from `config` ("model.name 'wrn10_1' -> 'wrn10_2'"); [] if unknown."""
    from sam_jax.config_schema import base_config  # ml_collections: only here

    old = read_json(path(workdir, CHECKPOINT_CONFIG_FILE))
    if not is_sam_jax_config(old):
        return []
    return _differences(old, config_as_dict(config), config_as_dict(base_config()))


def check_usable(workdir: str) -> None:
    """BadInputError, before anything is written, for a workdir no run may
    use: not a writable directory, or one holding a config.json that is not
    a sam_jax config (it belongs to something else: --overwrite refuses too)."""
    check_writable(workdir)
    config_path = path(workdir, CONFIG_FILE)
    old = read_json(config_path)
    if os.path.exists(config_path) and old is not None and not is_sam_jax_config(old):
        raise BadInputError(
            f"workdir {workdir!r} holds a config.json that is not a sam_jax config; "
            "refusing to touch it (--overwrite too): use another workdir")


def check_writable(workdir: str) -> None:
    """BadInputError unless `workdir` is (or can be made) a writable directory."""
    if not workdir or not workdir.strip():
        # (os.makedirs('') raises FileNotFoundError deep in the run)
        raise BadInputError(f"workdir {workdir!r} is empty: give the directory for the "
                            "run's checkpoints, logs and results (--workdir=DIR)")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise BadInputError(f"workdir {workdir!r} is a file, not a directory")
    existing = os.path.abspath(workdir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise BadInputError(f"workdir {workdir!r}: {existing!r} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        reason = ("a read-only file system" if e.errno == errno.EROFS
                  else e.strerror or type(e).__name__)
        raise BadInputError(f"workdir {workdir!r} cannot be written ({reason})") from None


# ------------------------------------------------------------ the lock

@contextlib.contextmanager
def exclusive(workdir: str, process_index: int = 0):
    """Holds `workdir`'s lock (one per process of a multi-process run) while
    the run runs; BadInputError naming the holder if another run has it."""
    check_usable(workdir)
    created = not os.path.exists(workdir)
    os.makedirs(workdir, exist_ok=True)
    name = LOCK_FILE if process_index == 0 else f"{LOCK_FILE}.{process_index}"
    lock_path = path(workdir, name)
    handle = open(lock_path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise BadInputError(f"workdir {workdir!r} is in use by a run of {holder}; "
                            "one run per workdir (wait for it, or use another "
                            "workdir)") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"host {socket.gethostname()} pid {os.getpid()}\n")
        handle.flush()
        yield
    finally:
        # A run that stopped before writing anything leaves no directory
        # behind if it made it (the corrected command starts clean).
        if created and os.listdir(workdir) == [name]:
            with contextlib.suppress(OSError):
                os.remove(lock_path)
                os.rmdir(workdir)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
