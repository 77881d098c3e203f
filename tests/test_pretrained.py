"""Tests of sam_jax.pretrained: loading a checkpoint (a converted one, or a
run's orbax checkpoint) into a model with a new head, and the one-line errors
for checkpoints that do not fit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds

from helpers import finetune_config
from helpers import tiny_variables
from sam_jax import checkpoint
from sam_jax import pretrained
from sam_jax import steps
from sam_jax import train
from sam_jax.models import get_model
from sam_jax.validate import ConfigError


def leaves_with_paths(tree):
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_pretrained_weights_everywhere_but_a_new_head(converted_checkpoint):
    variables = pretrained.read_checkpoint(converted_checkpoint, "msgpack")  # 10 classes
    config = finetune_config(converted_checkpoint)  # CIFAR-100
    model = get_model("efficientnet_tiny", 100)
    tx = train.training_chain(config, 10).tx
    fresh = steps.initial_state(config.seed, model, tx, (40, 40, 3))
    state, head_kept = train.from_pretrained(config, fresh, tx)
    assert not head_kept and int(state.step) == 0
    got, want = leaves_with_paths(state.params), leaves_with_paths(variables["params"])
    fresh_head = leaves_with_paths(fresh.params["head"])
    assert got["['head']['kernel']"].shape == (320, 100)
    for key, value in got.items():
        if key.startswith("['head']"):
            np.testing.assert_array_equal(value, fresh_head[key[len("['head']"):]])
        else:
            np.testing.assert_array_equal(value, want[key])
    for got_stats, want_stats in zip(jax.tree_util.tree_leaves(state.batch_stats),
                                     jax.tree_util.tree_leaves(variables["batch_stats"])):
        np.testing.assert_array_equal(got_stats, want_stats)
    # Same number of classes (ImageNet finetuning of an ImageNet model): the
    # checkpoint's head is kept.
    same_classes = jax.tree_util.tree_map(np.zeros_like, variables)
    merged, head_kept = pretrained.merge(variables, same_classes)
    assert head_kept
    for got_leaf, want_leaf in zip(jax.tree_util.tree_leaves(merged),
                                   jax.tree_util.tree_leaves(variables)):
        np.testing.assert_array_equal(got_leaf, want_leaf)


def test_orbax_checkpoint_of_a_run_is_a_pretrained_format(tmp_path):
    rng = np.random.default_rng(3)
    params = {"conv": {"kernel": rng.normal(size=(3, 3, 1, 4)).astype(np.float32)},
              "head": {"kernel": rng.normal(size=(4, 10)).astype(np.float32),
                       "bias": np.zeros(10, np.float32)}}
    batch_stats = {"bn": {"mean": rng.normal(size=4).astype(np.float32),
                          "var": rng.uniform(size=4).astype(np.float32)}}
    tx = optax.sgd(0.1, momentum=0.9)
    state = steps.new_train_state(params, batch_stats, tx.init(params))
    manager = checkpoint.make_manager(str(tmp_path))
    checkpoint.save(manager, state.replace(step=jnp.asarray(7, jnp.int32)))
    manager.wait_until_finished()
    for path in (str(tmp_path), str(tmp_path / "checkpoints" / "7")):
        read = pretrained.read_checkpoint(path, "orbax")
        for got, want in zip(jax.tree_util.tree_leaves(read),
                             jax.tree_util.tree_leaves(
                                 {"params": params, "batch_stats": batch_stats})):
            np.testing.assert_array_equal(got, want)


def test_check_fits_names_the_first_mismatch(converted_checkpoint):
    variables = pretrained.read_checkpoint(converted_checkpoint, "msgpack")
    model_variables = jax.eval_shape(get_model("efficientnet_tiny", 100).init,
                                     jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    pretrained.check_fits(variables, model_variables)  # the head may differ

    def edited(edit):
        tree = jax.tree_util.tree_map(np.copy, variables)
        edit(tree)
        return tree
    cases = [
        (lambda t: t["params"]["stem_conv"].update(kernel=np.zeros((3, 3, 3, 4))),
         "params/stem_conv/kernel has shape (3, 3, 3, 4) in it, (3, 3, 3, 8) in the model"),
        (lambda t: t["batch_stats"]["top_bn"].pop("var"),
         "batch_stats/top_bn/var (shape (320,)) is missing from it"),
        (lambda t: t["params"].update(extra={"kernel": np.zeros(2)}),
         "it has params/extra/kernel (shape (2,)), which the model does not"),
    ]
    for edit, message in cases:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            pretrained.check_fits(edited(edit), model_variables)


@pytest.mark.parametrize("case, message", [
    ("unset", "pretrained.path is not set: this finetuning config needs a pretrained "
              "checkpoint"),
    ("missing", "no such file"),
    ("garbage", "cannot be read as format 'msgpack'"),
    ("other_model", "does not fit model 'efficientnet_tiny': it has batch_stats/"),
])
def test_bad_pretrained_checkpoint_is_one_line_and_writes_nothing(
        tmp_path, converted_checkpoint, case, message):
    path = {"unset": None, "missing": str(tmp_path / "nothing.msgpack"),
            "garbage": str(tmp_path / "garbage.msgpack"),
            "other_model": str(tmp_path / "other.msgpack")}[case]
    (tmp_path / "garbage.msgpack").write_bytes(b"not a checkpoint")
    if case == "other_model":
        pretrained.save_msgpack(path, *tiny_variables(np.zeros((1, 6, 6, 2)), 0))
    workdir = tmp_path / "run"
    with tfds.testing.mock_data(num_examples=32):
        with pytest.raises(ConfigError) as error:
            train.train_and_evaluate(finetune_config(path), str(workdir))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not workdir.exists()
