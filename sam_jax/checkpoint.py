"""Every use of orbax: save the training state, resume from the latest good
checkpoint, and read a run's weights back (analysis, finetuning).

orbax writes a checkpoint into a temporary directory and renames it when it is
complete, so a write cut short by a kill is never taken for a checkpoint (and
its leftovers are removed). A complete checkpoint that cannot be read (a broken
disk, a truncated copy) is moved aside to `checkpoints_corrupt/` with a warning
and the previous one is used.
"""

import contextlib
import logging as logging_lib
import os
import shutil
import sys
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from sam_jax import workdir as workdir_lib
from sam_jax._trees import key_name


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), workdir_lib.CHECKPOINT_DIR)


def latest_step(workdir: str) -> Optional[int]:
    """The newest step saved in `workdir`, or None; reads a listing, writes nothing.

    A step directory that orbax has finished renaming into place has a bare
    integer name; temporary ones (`N.orbax-checkpoint-tmp-...`) do not count.
    """
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        return None
    steps = [int(d) for d in os.listdir(directory) if d.isdigit()]
    return max(steps) if steps else None


def make_manager(workdir: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           cleanup_tmp_directories=True)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def read_only_manager(workdir: str) -> ocp.CheckpointManager:
    """A manager that never creates, cleans up or moves anything in `workdir`
    (e.g. to analyse a run that is still training)."""
    # orbax warns that read-only is read-only; that is the point, so it is hidden.
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        return ocp.CheckpointManager(
            checkpoint_dir(workdir), item_handlers=ocp.PyTreeCheckpointHandler(),
            options=ocp.CheckpointManagerOptions(read_only=True, create=False))
    finally:
        logging.set_verbosity(verbosity)


@contextlib.contextmanager
def saves_finished_on_error(manager: ocp.CheckpointManager):
    """An exception from the block waits for the save in flight before it goes
    on: a run started again in the same process (a notebook, a test) would
    otherwise clean up the temporary directory that save is still writing."""
    try:
        yield
    except BaseException:
        try:
            manager.wait_until_finished()
        except Exception:  # the block's exception is the one to report
            pass
        raise


def save(manager: ocp.CheckpointManager, state) -> None:
    step = int(jax.device_get(state.step))
    if step in manager.all_steps():
        return
    manager.save(step, args=ocp.args.StandardSave(state))


def first_line(error: BaseException, limit: int = 200) -> str:
    """`Type: first line of the message`: orbax's messages run to pages."""
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:limit]}"


def restore_latest(workdir: str, target) -> Optional[object]:
    """The latest readable state, shaped and sharded like `target`, or None.

    A checkpoint whose tree does not fit `target` (another model, another
    method's state) is not damaged: CheckpointMismatchError names the first
    difference and nothing is moved. Unreadable checkpoints newer than the
    one restored are moved to `checkpoints_corrupt/` (never deleted), so the
    run's next save at that step is not skipped.
    """
    drop_closed_loop_reports()
    manager = make_manager(workdir)
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    for step in sorted(manager.all_steps(), reverse=True):
        mismatch = _tree_mismatch(workdir, step, target)
        if mismatch:
            manager.close()
            raise CheckpointMismatchError(
                f"checkpoint {step} in {workdir} does not fit this config: {mismatch}")
        try:
            with quiet_orbax():
                state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # orbax raises many types for a damaged checkpoint
            print(f"warning: checkpoint at step {step} in {workdir} cannot be read "
                  f"({first_line(e)}); moving it to "
                  f"{workdir_lib.CORRUPT_CHECKPOINT_DIR}/ and trying the previous one",
                  file=sys.stderr, flush=True)
            manager.close()
            if jax.process_index() == 0:
                _move_aside(workdir, step)
            manager = make_manager(workdir)
            continue
        manager.close()
        return state
    manager.close()
    return None


def _tree_mismatch(workdir: str, step: int, target) -> str:
    """'' unless checkpoint `step`'s saved tree (read from its metadata, no
    arrays) cannot be `target`'s: the model's parameters and statistics are
    compared path by path, the rest (the optimizer state) by its shapes. A
    checkpoint whose metadata cannot be read is left to the restore (damaged)."""
    manager = read_only_manager(workdir)
    try:
        with quiet_orbax():
            metadata = manager.item_metadata(step)
        have = _metadata_shapes(getattr(metadata, "tree", metadata))
    except Exception:  # unreadable: a damaged checkpoint, not a mismatch
        return ""
    finally:
        manager.close()
    if not have:
        return ""
    want = _shapes(target)
    model = ("params/", "batch_stats/")
    mismatch = _mismatch({k: v for k, v in have.items() if k.startswith(model)},
                         {k: v for k, v in want.items() if k.startswith(model)})
    if mismatch:
        return mismatch
    rest_have = sorted(v for k, v in have.items() if not k.startswith(model))
    rest_want = sorted(v for k, v in want.items() if not k.startswith(model))
    if rest_have != rest_want:
        return (f"its optimizer state holds {len(rest_have)} arrays, this config's "
                f"{len(rest_want)} (another method or optimizer)")
    return ""


def _metadata_shapes(tree, prefix: str = "") -> dict:
    """{"params/head/kernel": shape, ...} of an orbax metadata tree (dicts,
    lists and array metadata), in the paths `_shapes` gives a pytree."""
    shapes = {}
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        if tree is not None and hasattr(tree, "shape"):
            shapes[prefix] = tuple(tree.shape)
        return shapes
    for key, value in items:
        shapes.update(_metadata_shapes(value, f"{prefix}/{key}" if prefix else str(key)))
    return shapes


@contextlib.contextmanager
def quiet_orbax():
    """orbax's async machinery prints pages of asyncio tracebacks ("Event loop
    is closed") around a damaged checkpoint; the caller reports one line."""
    loggers = [logging_lib.getLogger(name) for name in ("asyncio", "absl")]
    levels = [logger.level for logger in loggers]
    verbosity = logging.get_verbosity()
    try:
        for logger in loggers:
            logger.setLevel(logging_lib.CRITICAL)
        logging.set_verbosity(logging.FATAL)
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        logging.set_verbosity(verbosity)


def _is_closed_loop_report(kind, value) -> bool:
    return kind is RuntimeError and str(value) == "Event loop is closed"


def drop_closed_loop_reports() -> None:
    """When a restore fails, orbax's tensorstore reads still in flight call
    back into the event loop it has closed; each callback's RuntimeError
    ("Event loop is closed") is printed from a tensorstore thread (as
    unraisable, or through sys.excepthook): hundreds of tracebacks around
    the one-line warning. Those reports, and only those, are dropped from
    here on (they keep coming after the restore has returned, so a scoped
    filter would miss them)."""
    if getattr(sys.unraisablehook, "drops_closed_loop_reports", False):
        return
    previous_unraisable, previous_except = sys.unraisablehook, sys.excepthook

    def unraisable_hook(unraisable):
        if not _is_closed_loop_report(unraisable.exc_type, unraisable.exc_value):
            previous_unraisable(unraisable)

    def except_hook(kind, value, traceback):
        if not _is_closed_loop_report(kind, value):
            previous_except(kind, value, traceback)

    unraisable_hook.drops_closed_loop_reports = True
    sys.unraisablehook, sys.excepthook = unraisable_hook, except_hook


def _move_aside(workdir: str, step: int) -> None:
    source = os.path.join(checkpoint_dir(workdir), str(step))
    target_dir = os.path.join(os.path.abspath(workdir),
                              workdir_lib.CORRUPT_CHECKPOINT_DIR)
    os.makedirs(target_dir, exist_ok=True)
    target = os.path.join(target_dir, str(step))
    suffix = 0
    while os.path.exists(target):
        suffix += 1
        target = os.path.join(target_dir, f"{step}.{suffix}")
    shutil.move(source, target)


# ---------------------------------------------------------------- reading back

def _shapes(tree) -> dict[str, tuple]:
    """{"params/stem/kernel": shape, ...} over the leaves of nested dicts."""
    return {"/".join(key_name(k) for k in path): tuple(np.shape(leaf))
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def first_mismatch(saved, target, *, skip=lambda path: False) -> str:
    """'' if `saved` has exactly the paths and shapes of `target`, else the first
    path that is missing, extra or of another shape, in words.

    `skip(path)` leaves paths out of the comparison (e.g. a classifier head
    that finetuning replaces). Paths are slash-joined keys, "params/head/kernel".
    """
    return _mismatch(_shapes(saved), _shapes(target), skip=skip)


def _mismatch(have: dict, want: dict, *, skip=lambda path: False) -> str:
    have = {k: v for k, v in have.items() if not skip(k)}
    want = {k: v for k, v in want.items() if not skip(k)}
    for key in sorted(set(have) | set(want)):
        if key not in have:
            return f"{key} (shape {want[key]}) is missing from it"
        if key not in want:
            return f"it has {key} (shape {have[key]}), which the model does not"
        if have[key] != want[key]:
            return f"{key} has shape {have[key]} in it, {want[key]} in the model"
    return ""


def step_item_dir(path: str) -> str:
    """The directory holding a saved train state, from a workdir (its latest
    checkpoint) or from one `checkpoints/STEP` directory. ValueError if none."""
    if os.path.isdir(os.path.join(path, workdir_lib.CHECKPOINT_DIR)):
        step = latest_step(path)
        if step is None:
            raise ValueError(f"{path!r} has no checkpoint in "
                             f"{workdir_lib.CHECKPOINT_DIR}/")
        path = os.path.join(checkpoint_dir(path), str(step))
    if os.path.isdir(os.path.join(path, "default")):
        path = os.path.join(path, "default")
    return path


def read_tree(path: str) -> Any:
    """A saved train state as nested dicts of numpy arrays (no target needed).

    Every array is read onto one local device first: without a target, orbax
    restores the shardings it saved, and refuses ("Topology mismatch") those
    of a run on other devices, such as every multi-process run.
    """
    item = step_item_dir(path)
    with quiet_orbax():
        checkpointer = ocp.StandardCheckpointer()
        metadata = checkpointer.metadata(item)
        tree = getattr(metadata, "item_metadata", metadata)
        tree = getattr(tree, "tree", tree)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree_util.tree_map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
            tree)
        return jax.tree_util.tree_map(np.asarray, checkpointer.restore(item, target))


class CheckpointMismatchError(ValueError):
    """A checkpoint whose tree does not fit the target; the message says where."""


def restore_parts(workdir: str, target: dict) -> tuple[int, dict]:
    """(step, parts) from the newest readable checkpoint of `workdir`, read-only.

    `target` maps top-level entries of the saved state (e.g. "step", "params",
    "batch_stats") to shape structs; only those are read (a partial restore),
    so the optimizer part may differ between the writer and the reader.
    Raises CheckpointMismatchError when a checkpoint's parts do not fit
    `target` (checked first: orbax's own errors are pages long), and
    FileNotFoundError naming the last problem when no checkpoint is readable.
    """
    args = ocp.args.PyTreeRestore(
        target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)
    drop_closed_loop_reports()
    manager = read_only_manager(workdir)
    problem = "no checkpoint"
    try:
        for step in sorted(manager.all_steps(), reverse=True):
            try:
                with quiet_orbax():
                    metadata = manager.item_metadata(step)
                tree = getattr(metadata, "tree", metadata)
                saved = {k: tree.get(k, {}) for k in target if k != "step"}
                wanted = {k: v for k, v in target.items() if k != "step"}
                mismatch = first_mismatch(saved, wanted)
                if mismatch:
                    raise CheckpointMismatchError(f"checkpoint {step}: {mismatch}")
                with quiet_orbax():
                    restored = manager.restore(step, args=args)
            except CheckpointMismatchError:
                raise
            except Exception as e:  # orbax raises many types for a bad checkpoint
                problem = f"checkpoint {step} cannot be read ({first_line(e)})"
                print(f"warning: {problem}; trying the previous one", file=sys.stderr,
                      flush=True)
                continue
            return int(restored["step"]), restored
    finally:
        manager.close()
    raise FileNotFoundError(f"{problem} in {checkpoint_dir(workdir)}")
