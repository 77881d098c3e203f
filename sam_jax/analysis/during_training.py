"""Sharpness measured while training runs.

Every few epochs (`sharpness_metrics`, config.sharpness.every_epochs): the
paper's Figure 3 quantities. The paper reports, at several epochs, the
Hessian's top eigenvalue lambda_max and the ratio lambda_max / lambda_5 (its
Fig. 3, after Jastrzebski et al.), and relates m-sharpness to generalisation.
They are computed on a fixed subset of the training data, BatchNorm in
evaluation mode, so values from different epochs compare.

Every few steps (`StabilityTracker`, config.sharpness.every_steps): the edge
of stability. lambda_max of the loss the optimizer descends (BatchNorm in
training mode, over the fixed batch; the L2 term included) beside the edges
of stability.py (2 / lr; SAM's at the batch's ||g||; USAM's), optionally the
Hessian's trace (Hutchinson) and the penultimate features' rank.
"""

import contextlib
import functools
from typing import Optional

import jax
import numpy as np
from jax.tree_util import Partial

from sam_jax import batch_norm
from sam_jax import steps
from sam_jax.analysis import features
from sam_jax.analysis import hessian
from sam_jax.analysis import hessian_trace
from sam_jax.analysis import msharpness
from sam_jax.analysis import run_io
from sam_jax.analysis import stability

# Examples per streamed batch for the HVPs: bounds memory, not the result.
_HVP_BATCH = 256


def _one_device(tree):
    """A replicated (e.g. mesh-sharded) state as single-device arrays, no copy to host."""
    def local(x):
        if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
            if not x.is_fully_replicated:
                raise ValueError("sharpness_metrics needs a replicated state")
            return x.addressable_shards[0].data
        return x
    return jax.tree_util.tree_map(local, tree)


def fixed_subset(num_total: int, num_examples: int, seed: int) -> np.ndarray:
    """Sorted indices of `num_examples` examples, a function of (num_total, seed) only."""
    if not 1 <= num_examples <= num_total:
        raise ValueError(f"num_examples={num_examples} must be in [1, {num_total}]")
    return np.sort(np.random.default_rng(seed).permutation(num_total)[:num_examples])


def sharpness_metrics(model, state, images, labels, *, num_examples: int = 256,
                      top_k: int = 5, m: int = 16, rho: float = 0.05,
                      seed: int = 0,
                      num_iterations: Optional[int] = None) -> dict[str, float]:
    """Hessian and m-sharpness metrics of `state` on a fixed training subset.

    Args:
        model: the flax module being trained.
        state: a `steps.TrainState` (replicated over a mesh, or on one device).
        images: float32 [N, H, W, C] training images AS THE MODEL TAKES THEM,
            i.e. normalised and not augmented, e.g.
            `data.preprocess_for_eval(train_images, spec).numpy()`.
        labels: int [N] training labels (with the run's label noise).
        num_examples: size of the subset; the same `seed` picks the same
            subset every call. Must be a multiple of m.
        top_k: eigenvalues computed; lambda_max / lambda_top_k is reported.
        m: examples per set for m-sharpness.
        rho: radius for m-sharpness (one SAM ascent step per set).
        seed: the subset, and Lanczos's start vector.
        num_iterations: Lanczos iterations (default max(20, 2 top_k + 10),
            which settles the top 5 of a trained WRN-16-2 to 1e-6).

    The loss is the mean cross entropy without the L2 term, with BatchNorm in
    evaluation mode (running statistics): a function of the weights alone.
    Cost: num_iterations Hessian-vector products (each ~2.5 gradient
    evaluations) plus one SAM step per set, on `num_examples` examples.
    Compiled once per model and shapes, then reused across calls. Measured on
    a (shared, slow) 2-core CPU after compilation, 256 examples: WRN-10-1
    ~5 s of CPU time, WRN-16-2 ~45 s (use 64-128 examples there for a few s).

    Returns:
        {"lambda_max", f"lambda_max_over_lambda_{top_k}", "lambda_{top_k}",
         f"m_sharpness" (at m and rho), "subset_loss"}: Python floats.
    """
    if top_k < 2:
        raise ValueError(f"top_k={top_k} must be >= 2 (lambda_max / lambda_top_k)")
    indices = fixed_subset(len(labels), num_examples, seed)
    if num_examples % m:
        raise ValueError(f"m={m} must divide num_examples={num_examples}")
    subset = {"image": np.asarray(images)[indices],
              "label": np.asarray(labels)[indices].astype(np.int32)}
    params, batch_stats = _one_device((state.params, state.batch_stats))
    loss_fn = run_io.make_loss_fn(model, batch_stats)
    batches = run_io.make_batches(subset["image"], subset["label"], _HVP_BATCH)
    eigenvalues = hessian.hessian_eigenvalues(loss_fn, params, batches, k=top_k,
                                              num_iterations=num_iterations, seed=seed)
    sharpness = msharpness.m_sharpness(loss_fn, params, subset, m=m, rho=rho)
    return {
        "lambda_max": float(eigenvalues[0]),
        f"lambda_{top_k}": float(eigenvalues[-1]),
        f"lambda_max_over_lambda_{top_k}": float(eigenvalues[0] / eigenvalues[-1]),
        "m_sharpness": sharpness,
        "subset_loss": hessian.mean_loss(loss_fn, params, batches),
    }


# ------------------------------------------------------------ every few steps

def _training_loss(model, weight_decay, label_smoothing, frozen, dropout_seed,
                   batch_stats, params, batch):
    context = batch_norm.frozen_batch_norm() if frozen else contextlib.nullcontext()
    with context:
        logits, _ = model.apply({"params": params, "batch_stats": batch_stats},
                                batch["image"], train=True, mutable=["batch_stats"],
                                rngs={"dropout": jax.random.PRNGKey(dropout_seed)})
    loss = steps.cross_entropy(logits, batch["label"], label_smoothing).mean()
    if weight_decay:
        loss = loss + weight_decay * steps.l2_penalty(params)
    return loss


@functools.lru_cache(maxsize=None)
def _bound_training_loss(model, weight_decay: float, label_smoothing: float,
                         frozen: bool, dropout_seed: int):
    # One function object per (model, constants): compiled code is reused.
    return functools.partial(_training_loss, model, weight_decay, label_smoothing,
                             frozen, dropout_seed)


def make_training_loss_fn(model, batch_stats, *, weight_decay: float = 0.0,
                          label_smoothing: float = 0.0,
                          freeze_batch_norm: bool = False,
                          dropout_seed: int = 0) -> Partial:
    """loss_fn(params, batch): the training step's loss on `batch` as ONE batch.

    BatchNorm in training mode normalises with the statistics of the whole
    `batch` (the running `batch_stats` are only read with
    `freeze_batch_norm`), the L2 term weight_decay * 0.5 ||params||^2 is
    included and dropout-like draws use a fixed key: a function of the weights
    alone for a fixed batch. Unlike hessian.py's convention, it changes when
    the batch is cut into pieces (BatchNorm's statistics), so pass one batch.
    With a full batch (batch = training set, m = batch) it is the loss that
    full-batch GD and SAM descend.
    """
    return Partial(_bound_training_loss(model, float(weight_decay),
                                        float(label_smoothing), bool(freeze_batch_norm),
                                        int(dropout_seed)), batch_stats)


class StabilityTracker:
    """The edge of stability on a fixed batch, measured every few training steps.

    Holds the fixed batch and the last top eigenvector: each call's Lanczos
    starts from the previous call's Ritz vector (a warm start), so a few
    iterations follow lambda_max as training moves it. The first call (and
    the first after a resume) starts from a random vector drawn with `seed`.

    Args:
        model: the flax module being trained.
        images, labels: the fixed batch, as the model takes them (normalised,
            not augmented); one batch (BatchNorm over all of it).
        weight_decay, label_smoothing, freeze_batch_norm: the run's loss
            (make_training_loss_fn).
        num_iterations: Lanczos iterations per call (HVPs on the batch).
        trace_probes: Rademacher probes of Hutchinson's trace estimate (0: no
            trace); the same probes every call, so the trace's changes over
            training are not probe noise.
        rank_images: images whose penultimate features' rank is reported
            (BatchNorm in evaluation mode; None: no rank).
        seed: the first start vector, the probes and dropout's key.
    """

    def __init__(self, model, images, labels, *, weight_decay: float = 0.0,
                 label_smoothing: float = 0.0, freeze_batch_norm: bool = False,
                 num_iterations: int = 10, trace_probes: int = 0,
                 rank_images: Optional[np.ndarray] = None, seed: int = 0):
        if num_iterations < 1:
            raise ValueError(f"num_iterations={num_iterations} must be >= 1")
        if trace_probes < 0 or trace_probes == 1:
            raise ValueError(f"trace_probes={trace_probes} must be 0 (off) or >= 2")
        self.model = model
        self.batch = {"image": np.asarray(images, np.float32),
                      "label": np.asarray(labels, np.int32)}
        self.loss_options = dict(weight_decay=weight_decay,
                                 label_smoothing=label_smoothing,
                                 freeze_batch_norm=freeze_batch_norm, dropout_seed=seed)
        self.num_iterations = num_iterations
        self.trace_probes = trace_probes
        self.rank_images = None if rank_images is None else np.asarray(rank_images,
                                                                       np.float32)
        self.seed = seed
        self.start = None  # the last top eigenvector (flat), the next warm start

    def __call__(self, state, learning_rate: float, *, rho: Optional[float] = None,
                 unnormalised: bool = False) -> dict[str, float]:
        """The record of `state` (a steps.TrainState, replicated or on one device).

        Args:
            learning_rate: the step's learning rate, > 0: the edges' lr.
            rho: the radius of SAM (e = rho g / ||g||) or, with `unnormalised`,
                of USAM (e = rho g); None: no SAM edge.

        Returns:
            {"loss", "grad_norm" (||g|| of the loss on the batch), "lambda_max",
             "learning_rate", "two_over_lr", "ratio" = lambda_max / (2 / lr)};
            with rho: "rho" and "sam_edge", "sam_ratio" (or "usam_edge",
            "usam_ratio"); with trace_probes: "trace", "trace_stderr"; with
            rank_images: "feature_rank" (99% of the variance). A ratio near 1:
            training runs at that edge.
        """
        params, batch_stats = _one_device((state.params, state.batch_stats))
        loss_fn = make_training_loss_fn(self.model, batch_stats, **self.loss_options)
        lambda_max, self.start = hessian.top_eigenpair(
            loss_fn, params, self.batch, self.num_iterations, start=self.start,
            seed=self.seed)
        grad_norm = stability.gradient_norm(loss_fn, params, self.batch)
        two_over_lr = stability.gd_edge(learning_rate)
        record = {"loss": hessian.mean_loss(loss_fn, params, self.batch),
                  "grad_norm": grad_norm, "lambda_max": lambda_max,
                  "learning_rate": float(learning_rate), "two_over_lr": two_over_lr,
                  "ratio": lambda_max / two_over_lr}
        if rho is not None:
            record["rho"] = float(rho)
            if unnormalised:
                edge, name = stability.usam_edge(learning_rate, rho), "usam"
            else:  # at a zero gradient SAM's edge is 0 (no ratio)
                edge = (stability.sam_edge(learning_rate, rho, grad_norm)
                        if grad_norm > 0 else 0.0)
                name = "sam"
            record[f"{name}_edge"] = edge
            if edge > 0:
                record[f"{name}_ratio"] = lambda_max / edge
        if self.trace_probes:
            trace, stderr = hessian_trace.hutchinson_trace(
                loss_fn, params, self.batch, num_probes=self.trace_probes, seed=self.seed)
            record.update(trace=trace, trace_stderr=stderr)
        if self.rank_images is not None:
            record["feature_rank"] = features.feature_rank(features.penultimate_features(
                self.model, {"params": params, "batch_stats": batch_stats},
                self.rank_images))
        return record
