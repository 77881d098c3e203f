"""Checkpoints of the training state with orbax: save, and resume from the latest."""

import os
from typing import Optional

import jax
import orbax.checkpoint as ocp


def make_manager(workdir: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
    # orbax writes into a temporary directory and renames it when complete, so
    # a checkpoint cut short by a kill is never taken for the latest one.
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                 options=options)


def save(manager: ocp.CheckpointManager, state) -> None:
    step = int(jax.device_get(state.step))
    if step in manager.all_steps():
        return
    manager.save(step, args=ocp.args.StandardSave(state))


def restore_latest(manager: ocp.CheckpointManager, target) -> Optional[object]:
    """The latest saved state shaped and sharded like `target`, or None."""
    step = manager.latest_step()
    if step is None:
        return None
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))
