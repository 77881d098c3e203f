"""What a run wrote, as the tables read it, and a root's compact record of it.

A run's outputs are {"results": results.json, "analysis": analysis.json,
"status": status.json, "sharpness" / "stability": metrics.jsonl's records of
that split}, each present only if written. `ROOT/run_outputs.jsonl` keeps one
JSON line per run under ROOT (sorted by name): its outputs without the scratch
that only serves to resume it (checkpoints, config.json, the launch log,
metrics.jsonl's training and evaluation lines, status.json's command, host and
time). A study commits this file and keeps its run directories out of git:
`collect` reads a run's workdir where there is one and its line here where
there is not (a fresh checkout), and the launchers refresh a run's line when
the run ends.

  python -m sam_jax.reproduce.run_outputs WORKDIR [WORKDIR ...]

refreshes the lines of those workdirs, each in its parent's (the root's) file.
"""

import contextlib
import fcntl
import json
import os
import sys
from typing import Optional

from sam_jax import workdir as workdir_lib

FILE = "run_outputs.jsonl"
# status.json's fields that a table reads: the state and exit code (failed or
# not) and the launch's wall-clock seconds (the studies' compute lines).
STATUS_KEYS = ("state", "exit_code", "elapsed_s")


def read_sharpness_records(workdir: str, split: str = "sharpness") -> Optional[list]:
    """metrics.jsonl's "sharpness" records (config.sharpness.every_epochs), or
    those of another split ("stability": config.sharpness.every_steps), None if
    none.

    A line cut short by a killed run is skipped: the records before it stand.
    """
    records = [row for row in workdir_lib.read_metrics(workdir, warn_torn=False)
               if row.get("split") == split]
    return records or None


def read_outputs(workdir: str) -> dict:
    """What a run wrote: {"results", "analysis", "status", "sharpness",
    "stability"} for what is present."""
    files = {"results": workdir_lib.RESULTS_FILE, "analysis": workdir_lib.ANALYSIS_FILE,
             "status": workdir_lib.STATUS_FILE}
    # A file cut short or damaged reads as absent: a run is done only if its
    # results.json reads (the trainer and the launchers agree on that).
    outputs = {key: workdir_lib.read_json(os.path.join(workdir, name))
               for key, name in files.items()}
    outputs = {key: value if isinstance(value, dict) else None
               for key, value in outputs.items()}
    outputs["sharpness"] = read_sharpness_records(workdir)
    outputs["stability"] = read_sharpness_records(workdir, "stability")
    return {key: value for key, value in outputs.items() if value is not None}


def last_activity(workdir: str) -> Optional[float]:
    """Newest mtime among the files a live run keeps writing."""
    paths = [workdir_lib.path(workdir, name) for name in
             (workdir_lib.METRICS_FILE, workdir_lib.CHECKPOINT_DIR,
              workdir_lib.STATUS_FILE, workdir_lib.LAUNCH_LOG_FILE)]
    checkpoints = workdir_lib.path(workdir, workdir_lib.CHECKPOINT_DIR)
    if os.path.isdir(checkpoints):
        paths += [entry.path for entry in os.scandir(checkpoints)]
    times = [os.path.getmtime(p) for p in paths if os.path.exists(p)]
    return max(times) if times else None


def compact(outputs: dict) -> dict:
    """The outputs a record keeps: all but status.json's scratch fields."""
    kept = dict(outputs)
    if "status" in kept:
        kept["status"] = {key: kept["status"][key] for key in STATUS_KEYS
                          if key in kept["status"]}
    return kept


def path(root: str) -> str:
    return os.path.join(root, FILE)


def read(root: str) -> dict[str, dict]:
    """{run name: its compact outputs} from ROOT/run_outputs.jsonl ({} without
    one). A damaged line is an error: it is a committed file, not a run's log."""
    try:
        with open(path(root)) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return {}
    records = {}
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            name = record.pop("name")
        except (ValueError, KeyError, AttributeError, TypeError):
            raise ValueError(f"{path(root)} line {number} is not a run's record "
                             "(a JSON object with a name)") from None
        records[name] = record
    return records


def to_text(records: dict[str, dict]) -> str:
    """One line per run, sorted by name: a refresh changes only its run's line."""
    return "".join(json.dumps({"name": name, **records[name]}, sort_keys=True) + "\n"
                   for name in sorted(records))


@contextlib.contextmanager
def _locked(root: str):
    """Launchers sharing a root (--shard) refresh the file one at a time."""
    with open(os.path.join(root, FILE + workdir_lib.LOCK_FILE), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def refresh(workdirs) -> None:
    """Writes each workdir's line into its root's file (a workdir with no
    outputs keeps its old line, if any)."""
    by_root = {}
    for workdir in workdirs:
        workdir = os.path.abspath(workdir.rstrip("/"))
        by_root.setdefault(os.path.dirname(workdir), []).append(workdir)
    for root, members in by_root.items():
        with _locked(root):
            records = read(root)
            for workdir in members:
                outputs = read_outputs(workdir)
                if outputs:
                    records[os.path.basename(workdir)] = compact(outputs)
            workdir_lib.write_text_atomic(path(root), to_text(records))


def main(argv=None) -> int:
    workdirs = sys.argv[1:] if argv is None else argv
    missing = [w for w in workdirs if not os.path.isdir(w)]
    if not workdirs or missing:
        print(f"error: give run directories; not one: {' '.join(missing) or '(none)'}",
              file=sys.stderr)
        return 2
    refresh(workdirs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
