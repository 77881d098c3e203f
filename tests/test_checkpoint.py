"""Tests of sam_jax.checkpoint with real orbax checkpoints of a small train
state: what counts as a checkpoint, mismatches in words, recovery from an
unreadable one, and partial reads."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import listing
from helpers import truncate_files
from sam_jax import checkpoint
from sam_jax import steps


def small_state(step, value):
    """A train state whose every weight and statistic is `value`."""
    params = {"dense": {"kernel": np.full((3, 2), value, np.float32),
                        "bias": np.full(2, value, np.float32)}}
    batch_stats = {"bn": {"mean": np.full(2, value, np.float32)}}
    tx = optax.sgd(0.1, momentum=0.9)
    state = steps.new_train_state(params, batch_stats, tx.init(params))
    return state.replace(step=jnp.asarray(step, jnp.int32))


def save(workdir, *states):
    manager = checkpoint.make_manager(str(workdir), max_to_keep=5)
    for state in states:
        checkpoint.save(manager, state)
    manager.wait_until_finished()
    manager.close()


def test_latest_step_counts_only_complete_checkpoints(tmp_path):
    assert checkpoint.latest_step(str(tmp_path)) is None  # no checkpoints/
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    assert checkpoint.latest_step(str(tmp_path)) is None  # an empty one
    # A write cut short leaves `N.orbax-checkpoint-tmp-...`; other names are
    # not steps either.
    for name in ("7", "20", "10", "30.orbax-checkpoint-tmp-1712345678", "best",
                 "40.bak"):
        (directory / name).mkdir()
    assert checkpoint.latest_step(str(tmp_path)) == 20
    assert checkpoint.checkpoint_dir(str(tmp_path)) == str(directory)


def test_first_mismatch_names_the_first_path_in_words():
    def tree(**shapes):
        """{"params/a/b": shape} -> nested dicts of shape structs."""
        out = {}
        for path, shape in shapes.items():
            *parents, leaf = path.split("__")
            node = out
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = jax.ShapeDtypeStruct(shape, jnp.float32)
        return out

    saved = {"params": {"conv": {"kernel": np.zeros((3, 3, 1, 4))},
                        "head": {"bias": np.zeros(10)}}}
    assert checkpoint.first_mismatch(saved, tree(
        params__conv__kernel=(3, 3, 1, 4), params__head__bias=(10,))) == ""
    assert checkpoint.first_mismatch(saved, tree(
        params__conv__kernel=(3, 3, 1, 4), params__conv__bias=(4,),
        params__head__bias=(10,))) == "params/conv/bias (shape (4,)) is missing from it"
    assert checkpoint.first_mismatch(saved, tree(params__conv__kernel=(3, 3, 1, 4))) == (
        "it has params/head/bias (shape (10,)), which the model does not")
    shape_and_head = tree(params__conv__kernel=(3, 3, 1, 8), params__head__bias=(100,))
    # Both differ; the first path in sorted order is named.
    assert checkpoint.first_mismatch(saved, shape_and_head) == (
        "params/conv/kernel has shape (3, 3, 1, 4) in it, (3, 3, 1, 8) in the model")
    assert checkpoint.first_mismatch(
        saved, shape_and_head, skip=lambda path: path.startswith("params/conv/")) == (
        "params/head/bias has shape (10,) in it, (100,) in the model")
    assert checkpoint.first_mismatch(
        saved, tree(params__conv__kernel=(3, 3, 1, 4), params__head__bias=(100,)),
        skip=lambda path: path.startswith("params/head/")) == ""


def test_restore_latest_moves_an_unreadable_newest_checkpoint_aside(tmp_path, capsys):
    assert checkpoint.restore_latest(str(tmp_path), small_state(0, 0.0)) is None
    save(tmp_path, small_state(10, 1.0), small_state(20, 2.0))
    assert truncate_files(tmp_path / "checkpoints" / "20")
    capsys.readouterr()
    restored = checkpoint.restore_latest(str(tmp_path), small_state(0, 0.0))
    assert int(restored.step) == 10
    for leaf in jax.tree_util.tree_leaves((restored.params, restored.batch_stats)):
        np.testing.assert_array_equal(leaf, 1.0)
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1
    assert warnings[0].startswith(f"warning: checkpoint at step 20 in {tmp_path} cannot "
                                  "be read (")
    assert warnings[0].endswith("); moving it to checkpoints_corrupt/ and trying the "
                                "previous one")
    # Moved, not deleted; the next restore finds step 10 without a warning.
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10"]
    assert os.listdir(tmp_path / "checkpoints_corrupt") == ["20"]
    assert int(checkpoint.restore_latest(str(tmp_path), small_state(0, 0.0)).step) == 10
    assert capsys.readouterr().err == ""


def test_step_item_dir_from_a_workdir_and_from_a_step_dir(tmp_path):
    save(tmp_path / "run", small_state(10, 1.0), small_state(20, 2.0))
    run = str(tmp_path / "run")
    assert checkpoint.step_item_dir(run) == f"{run}/checkpoints/20/default"
    assert checkpoint.step_item_dir(f"{run}/checkpoints/10") == (
        f"{run}/checkpoints/10/default")
    tree = checkpoint.read_tree(f"{run}/checkpoints/10")
    assert int(tree["step"]) == 10
    np.testing.assert_array_equal(tree["params"]["dense"]["kernel"],
                                  np.full((3, 2), 1.0, np.float32))
    assert int(checkpoint.read_tree(run)["step"]) == 20
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ValueError, match="has no checkpoint in checkpoints/"):
        checkpoint.step_item_dir(str(tmp_path / "empty"))


def test_restore_parts_reads_the_parts_asked_for_and_refuses_another_tree(tmp_path):
    save(tmp_path, small_state(10, 1.0), small_state(20, 2.0))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def target(kernel_shape):
        shapes = {"step": ((), jnp.int32), "params": {
            "dense": {"kernel": (kernel_shape, jnp.float32), "bias": ((2,), jnp.float32)}}}
        return jax.tree_util.tree_map(
            lambda s: jax.ShapeDtypeStruct(*s, sharding=device), shapes,
            is_leaf=lambda s: isinstance(s, tuple) and isinstance(s[0], tuple))

    before = listing(tmp_path)
    step, parts = checkpoint.restore_parts(str(tmp_path), target((3, 2)))
    assert step == 20 and set(parts) == {"step", "params"}
    for leaf in jax.tree_util.tree_leaves(parts["params"]):
        np.testing.assert_array_equal(leaf, 2.0)
    with pytest.raises(checkpoint.CheckpointMismatchError) as error:
        checkpoint.restore_parts(str(tmp_path), target((3, 4)))
    assert str(error.value) == (
        "checkpoint 20: params/dense/kernel has shape (3, 2) in it, (3, 4) in the model")
    assert isinstance(error.value, ValueError)
    assert listing(tmp_path) == before  # read-only
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        checkpoint.restore_parts(str(tmp_path / "nothing"), target((3, 2)))


def test_a_checkpoint_of_another_model_or_method_is_a_mismatch_not_damage(tmp_path):
    save(tmp_path, small_state(10, 1.0))
    before = listing(tmp_path)
    wider = small_state(0, 0.0)
    wider = wider.replace(params={"dense": {"kernel": np.zeros((3, 4), np.float32),
                                            "bias": np.zeros(4, np.float32)}})
    with pytest.raises(checkpoint.CheckpointMismatchError,
                       match=r"params/dense/bias has shape \(2,\) in it, \(4,\)"):
        checkpoint.restore_latest(str(tmp_path), wider)
    # Another optimizer state (Adam's two moments instead of one momentum).
    params = small_state(0, 0.0).params
    adam = small_state(0, 0.0).replace(opt_state=optax.adam(0.1).init(params))
    with pytest.raises(checkpoint.CheckpointMismatchError, match="optimizer state"):
        checkpoint.restore_latest(str(tmp_path), adam)
    assert listing(tmp_path) == before  # nothing moved aside
    assert int(checkpoint.restore_latest(str(tmp_path), small_state(0, 0.0)).step) == 10


class _RaisesWhenCollected:
    """Whose __del__ raises: CPython reports that through sys.unraisablehook,
    as it reports tensorstore's callbacks into orbax's closed event loop."""

    def __init__(self, message):
        self.message = message

    def __del__(self):
        raise RuntimeError(self.message)


def test_a_restore_drops_the_closed_event_loop_reports_and_only_those(tmp_path, capsys,
                                                                       monkeypatch):
    # Issue 33: a damaged checkpoint's two warnings came amid hundreds of
    # "RuntimeError: Event loop is closed" tracebacks, some printed after the
    # restore had returned.
    monkeypatch.setattr("sys.unraisablehook", sys.__unraisablehook__)
    monkeypatch.setattr("sys.excepthook", sys.__excepthook__)
    assert checkpoint.restore_latest(str(tmp_path), small_state(0, 0.0)) is None
    capsys.readouterr()
    _RaisesWhenCollected("Event loop is closed")  # collected at once: reported
    assert capsys.readouterr().err == ""
    _RaisesWhenCollected("something else")
    assert "RuntimeError: something else" in capsys.readouterr().err
    sys.excepthook(RuntimeError, RuntimeError("Event loop is closed"), None)
    assert capsys.readouterr().err == ""
    # Installed once, however many restores.
    hook = sys.unraisablehook
    checkpoint.restore_latest(str(tmp_path), small_state(0, 0.0))
    assert sys.unraisablehook is hook
