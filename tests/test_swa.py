"""Stochastic Weight Averaging (sam_jax/swa.py and the trainer's use of it):
the average against numpy means of the iterates, the BatchNorm pass against a
hand-written one, the schedules against their formulas, and exact resume."""

import dataclasses
import functools

import flax.linen as nn
import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from helpers import load_config
from sam_jax import checkpoint
from sam_jax import config_schema
from sam_jax import data
from sam_jax import steps
from sam_jax import swa
from sam_jax import train
from sam_jax.models import get_model


def test_running_average_is_the_mean_of_the_iterates():
    rng = np.random.default_rng(0)
    iterates = [{"a": rng.normal(size=(3, 2)).astype(np.float32),
                 "b": {"c": rng.normal(size=4).astype(np.float32)}} for _ in range(5)]
    average = swa.empty(iterates[0])
    for params in iterates:
        average = swa.add(average, params)
    assert int(average["count"]) == 5
    np.testing.assert_allclose(average["params"]["a"],
                               np.mean([p["a"] for p in iterates], axis=0), rtol=1e-6)
    np.testing.assert_allclose(average["params"]["b"]["c"],
                               np.mean([p["b"]["c"] for p in iterates], axis=0),
                               rtol=1e-6)


class InputBatchNorm(nn.Module):
    """BatchNorm on the pixels themselves: its statistics are the input's."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
        return nn.Dense(3, name="head")(x.mean(axis=(1, 2)))


def test_batch_norm_statistics_equal_a_hand_written_pass():
    model = InputBatchNorm()
    rng = np.random.default_rng(1)
    batches = [{"image": rng.normal(loc=i, size=(n, 4, 4, 2)).astype(np.float32)}
               for i, n in enumerate([8, 8, 5])]
    variables = model.init(jax.random.PRNGKey(0), batches[0]["image"])
    stats = swa.batch_norm_statistics(model, variables["params"],
                                      variables["batch_stats"], batches)
    sizes = np.array([len(b["image"]) for b in batches], np.float64)
    means = np.array([b["image"].mean(axis=(0, 1, 2)) for b in batches])
    variances = np.array([b["image"].var(axis=(0, 1, 2)) for b in batches])
    np.testing.assert_allclose(stats["bn"]["mean"], sizes @ means / sizes.sum(),
                               rtol=1e-5)
    np.testing.assert_allclose(stats["bn"]["var"], sizes @ variances / sizes.sum(),
                               rtol=1e-5)


def swa_config(schedule="constant", **swa_settings):
    config = config_schema.base_config()
    config.optimizer.learning_rate = 0.1
    config.optimizer.schedule = "cosine"
    config.swa.start_fraction = 0.5
    config.swa.schedule = schedule
    for key, value in swa_settings.items():
        config.swa[key] = value
    return config


def test_constant_schedule_is_the_authors():
    # timgaripov/swa `schedule`: lr_init until t = 0.5, linear to swa_lr at 0.9,
    # then swa_lr; t = epoch / swa_start. 10 epochs of 10 steps, start epoch 5.
    config = swa_config(learning_rate=0.01)
    base = optax.cosine_decay_schedule(0.1, 100)
    schedule = swa.learning_rate_schedule(config, base, 100, 10)
    for step in (0, 20, 25, 35, 44, 50, 99):
        t = step / 50
        factor = 1.0 if t <= 0.5 else (1 - 0.9 * (t - 0.5) / 0.4 if t <= 0.9 else 0.1)
        assert float(schedule(step)) == pytest.approx(0.1 * factor, rel=1e-5), step


def test_cyclic_schedule_falls_from_the_top_to_the_swa_rate_each_cycle():
    config = swa_config("cyclic", learning_rate=0.01, cycle_max_learning_rate=0.05,
                        cycle_epochs=2)
    schedule = swa.learning_rate_schedule(config, optax.constant_schedule(0.1), 100, 10)
    for step in range(50, 100):
        phase = ((step - 50) % 20 + 1) / 20
        want = (1 - phase) * 0.05 + phase * 0.01
        assert float(schedule(step)) == pytest.approx(want, rel=1e-5), step


def test_without_its_own_rate_the_base_schedule_stays():
    config = swa_config()  # learning_rate None: WASAM's choice
    base = optax.cosine_decay_schedule(0.1, 100)
    assert swa.learning_rate_schedule(config, base, 100, 10) is base


def test_averaging_steps():
    config = swa_config(cycle_epochs=2)
    config.swa.start_fraction = 0.3
    averaged = [done for done in range(1, 101)
                if swa.is_averaging_step(config, done, 10, 10)]
    assert averaged == [30, 50, 70, 90]


# ------------------------------------------------------------ in the trainer

class Interrupted(Exception):
    pass


def digits_swa_config():
    config = load_config("configs/quickstart.py")
    config.model.name = "wrn10_1"
    config.update(num_epochs=4, batch_size=64, log_every_steps=10, eval_every_epochs=2,
                  checkpoint_every_steps=20)
    config.swa.start_fraction = 0.5  # epochs 2, 3 and 4 are averaged
    return config


def restore(workdir, config, step=None):
    model = get_model(config.model.name, 10)
    target = steps.initial_state(config.seed, model,
                                 train.training_chain(config, 80, 20).tx, (8, 8, 1),
                                 with_swa=True)
    manager = checkpoint.make_manager(workdir)
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), target)
    state = manager.restore(step or manager.latest_step(),
                            args=ocp.args.StandardRestore(abstract))
    manager.close()
    return state


def test_trainer_averages_the_epochs_and_resumes_bitwise(tmp_path, monkeypatch):
    config = digits_swa_config()
    # Keep every checkpoint, so the iterates at the averaged epochs can be read.
    monkeypatch.setattr(checkpoint, "make_manager", functools.partial(
        checkpoint.make_manager, max_to_keep=None))
    results = train.train_and_evaluate(config, str(tmp_path / "a"))
    assert {"swa_test_error", "test_error"} <= set(results)
    final = restore(str(tmp_path / "a"), config)
    assert int(final.swa["count"]) == 3
    iterates = [restore(str(tmp_path / "a"), config, step).params for step in (40, 60, 80)]
    for got, *want in zip(jax.tree_util.tree_leaves(final.swa["params"]),
                          *[jax.tree_util.tree_leaves(p) for p in iterates]):
        np.testing.assert_allclose(got, np.mean(want, axis=0), rtol=1e-5, atol=1e-7)

    # Killed after step 50 (the checkpoint at 40 holds an average of one).
    real = data.prepare_inputs

    def prepare(*args, **kwargs):
        inputs = real(*args, **kwargs)
        batches = inputs.train_batches

        def dying(start, stop):
            for i, batch in enumerate(batches(start, stop)):
                if start == 0 and stop == 80 and i == 50:
                    raise Interrupted
                yield batch
        return dataclasses.replace(inputs, train_batches=dying)
    with monkeypatch.context() as patch:
        patch.setattr(data, "prepare_inputs", prepare)
        with pytest.raises(Interrupted):
            train.train_and_evaluate(config, str(tmp_path / "b"))
    resumed = train.train_and_evaluate(config, str(tmp_path / "b"))
    resumed.pop("train_seconds"), results.pop("train_seconds")
    assert resumed == results
    again = restore(str(tmp_path / "b"), config)
    for a, b in zip(jax.tree_util.tree_leaves(final.swa), jax.tree_util.tree_leaves(again.swa)):
        np.testing.assert_array_equal(a, b)


def test_swa_that_would_never_average_is_said_before_training():
    # Issue 33: start_fraction=0 on a run shorter than one epoch averaged
    # nothing (epoch ends only) and said nothing; results.json had no swa_*.
    config = config_schema.base_config()
    config.swa.start_fraction = 0.0
    problem = swa.never_averages(config, total_steps=20, steps_per_epoch=40)
    assert problem.startswith("swa.start_fraction=0.0: SWA adds the weights to its "
                              "average at epoch ends, and this run of 20 steps ends "
                              "before its first epoch (40 steps)")
    # The first epoch end that adds, from the rule in swa.is_averaging_step
    # checked step by step: one exists exactly when the run is an epoch long.
    for fraction in (0.0, 0.5, 0.99):
        config.swa.start_fraction = fraction
        for total_steps in (39, 40, 41, 79, 80, 200):
            num_epochs = total_steps // 40
            adds = any(swa.is_averaging_step(config, done, 40, num_epochs)
                       for done in range(1, total_steps + 1))
            assert (swa.never_averages(config, total_steps, 40) is None) == adds
    config.swa.start_fraction = None
    assert swa.never_averages(config, total_steps=20, steps_per_epoch=40) is None
