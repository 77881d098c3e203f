"""Checkpoints of the training state with orbax: save, and resume from the latest
good one.

orbax writes a checkpoint into a temporary directory and renames it when it is
complete, so a write cut short by a kill is never taken for a checkpoint (and
its leftovers are removed). A complete checkpoint that cannot be read (a broken
disk, a truncated copy) is moved aside to `checkpoints_corrupt/` with a warning
and the previous one is used.
"""

import os
import shutil
import sys
from typing import Optional

import jax
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "checkpoints_corrupt"


def make_manager(workdir: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           cleanup_tmp_directories=True)
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR), options=options)


def save(manager: ocp.CheckpointManager, state) -> None:
    step = int(jax.device_get(state.step))
    if step in manager.all_steps():
        return
    manager.save(step, args=ocp.args.StandardSave(state))


def restore_latest(workdir: str, target) -> Optional[object]:
    """The latest readable state, shaped and sharded like `target`, or None.

    Unreadable checkpoints newer than it are moved to `checkpoints_corrupt/`
    (never deleted), so the run's next save at that step is not skipped.
    """
    manager = make_manager(workdir)
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # orbax raises many types for a damaged checkpoint
            print(f"warning: checkpoint at step {step} in {workdir} cannot be read "
                  f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); moving it "
                  f"to {CORRUPT_DIR}/ and trying the previous one", file=sys.stderr,
                  flush=True)
            manager.close()
            if jax.process_index() == 0:
                _move_aside(workdir, step)
            manager = make_manager(workdir)
            continue
        manager.close()
        return state
    manager.close()
    return None


def _move_aside(workdir: str, step: int) -> None:
    source = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR, str(step))
    target_dir = os.path.join(os.path.abspath(workdir), CORRUPT_DIR)
    os.makedirs(target_dir, exist_ok=True)
    target = os.path.join(target_dir, str(step))
    suffix = 0
    while os.path.exists(target):
        suffix += 1
        target = os.path.join(target_dir, f"{step}.{suffix}")
    shutil.move(source, target)
