"""Stochastic Weight Averaging (Izmailov et al., UAI 2018) over any method.

As the authors' code (timgaripov/swa):
- from the start epoch (config.swa.start_fraction of the epochs), every
  `cycle_epochs` epochs, the weights join an equal-weight running average
  w_swa <- w_swa + (w - w_swa) / (n + 1); training continues from w;
- the learning rate, if `swa.learning_rate` is set: the base rate for the
  first half of the pre-averaging phase, a linear decay to swa.learning_rate
  by 90% of it, then constant ("constant"), or, in the averaging phase,
  cycles of `cycle_epochs` epochs from `cycle_max_learning_rate` down to
  swa.learning_rate ("cyclic", the paper's other schedule). Unset, the base
  schedule stays (as WASAM, Kaddour et al., NeurIPS 2022, does);
- before each evaluation of the average, its BatchNorm statistics are
  recomputed over one pass of the training data in training mode (the
  authors' `bn_update`): the mean over batches, weighted by size, of each
  batch's mean and variance (flax's biased variance). The pass reads the
  training batches of the epoch that just ended, so it is a pure function of
  (seed, step) and a resumed run recomputes the same statistics.
WASAM is this with method=sam.
"""

import functools
from typing import Any, Iterable, Optional

import jax
import jax.numpy as jnp
import optax

from sam_jax import batch_norm

SCHEDULES = ("constant", "cyclic")


def enabled(config) -> bool:
    return config.swa.start_fraction is not None


def start_epoch(config, num_epochs: int) -> int:
    """The first epoch whose end adds to the average (at least 1)."""
    return max(1, int(round(config.swa.start_fraction * num_epochs)))


def is_averaging_step(config, done: int, steps_per_epoch: int, num_epochs: int) -> bool:
    """Whether the weights after step `done` join the average."""
    if not enabled(config) or done % steps_per_epoch:
        return False
    epoch, first = done // steps_per_epoch, start_epoch(config, num_epochs)
    return epoch >= first and (epoch - first) % config.swa.cycle_epochs == 0


def never_averages(config, total_steps: int, steps_per_epoch: int) -> Optional[str]:
    """Why SWA, switched on, would add nothing to its average in this run (one
    line), or None. The weights join at epoch ends (as in the authors' code),
    so a run shorter than one epoch has none, whatever start_fraction says."""
    if not enabled(config) or total_steps >= steps_per_epoch:
        return None  # start_epoch <= the last epoch: at least one addition
    return (f"swa.start_fraction={config.swa.start_fraction!r}: SWA adds the weights "
            f"to its average at epoch ends, and this run of {total_steps} steps ends "
            f"before its first epoch ({steps_per_epoch} steps), so it would average "
            "nothing; train at least one epoch, or leave swa.start_fraction unset")


def learning_rate_schedule(config, base: optax.Schedule, total_steps: int,
                           steps_per_epoch: int) -> optax.Schedule:
    """The schedule with SWA's learning rate (the base one when it is unset)."""
    swa = config.swa
    if not enabled(config) or swa.learning_rate is None:
        return base
    peak = config.optimizer.learning_rate
    start = start_epoch(config, total_steps // steps_per_epoch) * steps_per_epoch
    cycle = swa.cycle_epochs * steps_per_epoch

    def schedule(count):
        t = count / start
        decay = jnp.clip((t - 0.5) / 0.4, 0.0, 1.0)
        before = peak + (swa.learning_rate - peak) * decay
        if swa.schedule == "constant":
            after = jnp.asarray(swa.learning_rate, jnp.float32)
        else:  # linear from cycle_max_learning_rate to learning_rate in each cycle
            phase = (jnp.mod(count - start, cycle) + 1) / cycle
            after = ((1 - phase) * swa.cycle_max_learning_rate
                     + phase * swa.learning_rate)
        return jnp.where(count < start, before, after).astype(jnp.float32)
    return schedule


def empty(params) -> dict:
    """The average before any weights joined it."""
    return {"params": jax.tree_util.tree_map(jnp.zeros_like, params),
            "count": jnp.zeros([], jnp.int32)}


def add(average: dict, params) -> dict:
    """`params` joins the equal-weight running average."""
    count = average["count"]
    weight = 1.0 / (count + 1).astype(jnp.float32)
    return {"params": jax.tree_util.tree_map(
                lambda a, w: a + (w - a) * weight.astype(a.dtype), average["params"],
                params),
            "count": count + 1}


def _nested(flat: dict) -> dict:
    """{('block', 'bn'): stats} -> {'block': {'bn': stats}}."""
    tree = {}
    for path, value in flat.items():
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return tree


@functools.partial(jax.jit, static_argnums=0)
def _batch_statistics(model, params, batch_stats, images, rng):
    store = {}
    with batch_norm.recording_batch_statistics(store):
        model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                    mutable=["batch_stats"], rngs={"dropout": rng})
    return _nested({path: {"mean": mean, "var": var}
                    for path, (mean, var) in store.items()})


def batch_norm_statistics(model, params, batch_stats, batches: Iterable[dict],
                          seed: int = 0) -> Any:
    """BatchNorm statistics of `params` over `batches` (training mode): per layer
    the size-weighted mean of the batches' means and variances. Layers without
    BatchNorm keep `batch_stats` as it is (there are none)."""
    total, count = None, 0
    for index, batch in enumerate(batches):
        size = batch["image"].shape[0]
        stats = _batch_statistics(model, params, batch_stats, batch["image"],
                                  jax.random.fold_in(jax.random.PRNGKey(seed), index))
        stats = jax.tree_util.tree_map(lambda x: x * size, stats)
        total = stats if total is None else jax.tree_util.tree_map(jnp.add, total, stats)
        count += size
    if total is None:
        raise ValueError("batch_norm_statistics: no batches")
    return jax.tree_util.tree_map(lambda x: x / count, total)


def check(config) -> Optional[str]:
    """Why the swa sub-config cannot run (one line), or None."""
    swa = config.swa
    if swa.start_fraction is None:
        return None
    import math
    if not (isinstance(swa.start_fraction, (int, float)) and 0 <= swa.start_fraction < 1):
        return f"swa.start_fraction={swa.start_fraction!r} must be in [0, 1) (None: off)"
    if not (isinstance(swa.cycle_epochs, int) and swa.cycle_epochs >= 1):
        return f"swa.cycle_epochs={swa.cycle_epochs!r} must be an integer >= 1"
    if swa.schedule not in SCHEDULES:
        return f"unknown swa.schedule {swa.schedule!r}; allowed: {', '.join(SCHEDULES)}"
    for key in ("learning_rate", "cycle_max_learning_rate"):
        value = swa[key]
        if value is not None and not (math.isfinite(value) and value > 0):
            return f"swa.{key}={value!r} must be a finite number > 0 (or None)"
    if swa.schedule == "cyclic" and (swa.learning_rate is None
                                     or swa.cycle_max_learning_rate is None):
        return ("swa.schedule='cyclic' needs swa.learning_rate and "
                "swa.cycle_max_learning_rate")
    return None
