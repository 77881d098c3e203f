"""Sharpness-Aware Minimization (Foret et al., ICLR 2021) as optax transforms.

One SAM step at weights w on a batch:
  g     = grad L(w)                        (the gradient the caller passes in)
  e     = rho * g / ||g||                  (SAM; global L2 norm over all leaves)
  g_sam = grad L(w + e)                    (same batch, same random draws)
and the base optimizer steps at w with g_sam.

Here: the perturbations (the L2 ball, ASAM's scaled ball, the p = infinity
ball, a random direction, USAM's unnormalised step, several ascent steps),
`sam`, `asam`, `usam`, `plain_gradient` (the sgd method) and the
`grouped_sam_gradient` convenience. methods.py lists the whole family; what
its members share is in collectives.py (device axes), groups.py (groups of m
examples, the grouped and plain forms), _step_info.py (the step's report),
_radius.py (rho schedules) and _trees.py (norms, leaf names).

The transforms' contract (optax `GradientTransformationExtraArgs`): put the
method first in a chain, and call

    updates, state = tx.update(grads, state, params, grad_fn=grad_fn)

where `grads` is the gradient at `params` on the batch and `grad_fn(p)` the
gradient at other weights p on the same batch with the same random draws
(dropout, Shake-Shake gates) and the same pre-step model state. With
`aux_init` (an example pytree of scalars, e.g. {"loss": 0.0}), `grad_fn(p)`
returns `(grads, aux)` of that structure and the caller passes `aux=` the same
quantities at `params`; the transform records the aux of the evaluation whose
gradient it returned in `state.info.aux` (a trainer logs the perturbed loss).

Per-device perturbation (the official code's default): inside `pmap`,
`shard_map` or `vmap` with `axis_name` (a name or a tuple of names), each
device perturbs with its own gradient and only the returned gradient is
averaged over the axes. With `grouped=True` the arguments carry a leading axis
of groups of m examples that perturb on their own (m-sharpness; see
groups.py). `sync_perturbation=True` averages g over groups and devices
before normalising, i.e. SAM on the global batch. Norms and the eps-guarded
division are computed in float32 whatever the gradients' dtype (bf16
gradients keep their norm; a 1e-12 eps is representable), and e is cast back
to the weights' dtype.
"""

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from sam_jax import family
from sam_jax._radius import (ScalarOrSchedule, check_rho, may_skip, rho_at,
                             with_optional_second_pass)
from sam_jax._step_info import StepInfo, check_update_args, empty_info, groups_info
from sam_jax._trees import leaf_name, tree_norm
from sam_jax.collectives import AxisName, axis_names, per_device, pmean
from sam_jax.groups import (add_to_groups, broadcast_groups, evaluate, group_mean,
                            num_groups_of, plain_form, pool)
from sam_jax.ranges import check_choice, check_number

BALLS = ("l2", "linf", "random")
# ASAM's scaled parameters. The authors (SamsungLabs/ASAM, asam.py) scale
# only parameters whose PyTorch name contains "weight": the conv and linear
# kernels, the BatchNorm scale, embeddings; biases and BatchNorm offsets keep
# T = 1. The same parameters by the names other libraries give them: flax's
# kernel, scale, embedding; Haiku's w, scale, embeddings (its biases are b,
# its BatchNorm offsets offset).
ASAM_LEAVES = ("weights", "all")
_ASAM_WEIGHT_NAMES = frozenset({"kernel", "scale", "embedding", "w", "embeddings"})


# ----------------------------------------------------------- perturbations

def asam_scaled(path, leaves: str = "weights") -> bool:
    """Whether ASAM scales the parameter at `path` by T = |w| + eta: every one
    (leaves="all"), or the weights by their leaf name (flax, Haiku, or
    PyTorch-style names that contain "weight", as the authors test)."""
    if leaves == "all":
        return True
    name = leaf_name(path)
    return name in _ASAM_WEIGHT_NAMES or "weight" in name


def _asam_scale(params, scaled: Callable, eta):
    """T = |w| + eta on the leaves `scaled` selects, 1 elsewhere; a ValueError
    if it selects none (ASAM would silently be SAM)."""
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    if not any(scaled(path) for path in paths):
        names = sorted({leaf_name(path) for path in paths})
        raise ValueError(
            f"ASAM scales no parameter: no leaf name of {names[:10]} is a weight by "
            f"the conventions it knows ({', '.join(sorted(_ASAM_WEIGHT_NAMES))}, or "
            "containing 'weight'); scale every leaf (asam(leaves='all'), "
            "sam(asam_leaves='all')) or choose them with a predicate on the key path")
    return jax.tree_util.tree_map_with_path(
        lambda path, w: (jnp.abs(w.astype(jnp.float32)) + eta) if scaled(path)
        else jnp.ones(w.shape, jnp.float32), params)


# ----------------------------------------------------------- perturbations

def perturbation(grads, params, rho, *, adaptive: bool = False, eta: float = 0.01,
                 eps: float = 1e-12, asam_leaves: Union[str, Callable] = "weights",
                 ball: str = "l2", normalize: bool = True, key=None):
    """e, the ascent step, in the dtype of `params`::

        SAM:   e = rho * g / (||g|| + eps).
        ASAM:  e = rho * T^2 g / (||T g|| + eps), T = |w| + eta on the leaves
               `asam_leaves` selects ("weights": kernels, BatchNorm scales and
               embeddings by their flax, Haiku or PyTorch-style names, the
               authors' rule; "all": every leaf; or a predicate on the key path),
               T = 1 elsewhere; a ValueError if it selects no leaf.
        USAM (normalize=False): e = rho * g.
        ball "linf": e = rho * sign(g) (the p = infinity ball of the paper's eq. 2).
        ball "random": e = rho * z / ||z||, z ~ N(0, I) from `key` (the paper's
               random-direction ablation).

    `eps` keeps a zero gradient finite (e = 0 then). The norm (_trees.tree_norm)
    and the division are in float32 whatever the gradients' dtype, so with
    bfloat16 or float16 gradients the eps = 1e-12 guard is still representable
    and meaningful (float16's smallest normal is 6e-5), and huge gradients
    (beyond 1e19, e.g. of a loss scaled up) still give a perturbation of norm rho.

    Args:
      grads: g, the gradient at `params` (a pytree like `params`).
      params: the weights w.
      rho: the radius (a float or a traced scalar).
      adaptive, eta, asam_leaves: ASAM's scaled ball, as in `sam`.
      eps: added to the norm.
      ball: "l2", "linf" or "random".
      normalize: False is USAM's e = rho * g.
      key: a PRNG key, needed by ball "random" only.

    Returns:
      e, a pytree like `params`.
    """
    if ball == "random":
        keys = jax.random.split(key, len(jax.tree_util.tree_leaves(params)))
        z = jax.tree_util.tree_unflatten(
            jax.tree_util.tree_structure(params),
            [jax.random.normal(k, p.shape, jnp.float32)
             for k, p in zip(keys, jax.tree_util.tree_leaves(params))])
        direction, norm = z, tree_norm(z)
    elif ball == "linf":
        direction = jax.tree_util.tree_map(lambda g: jnp.sign(g).astype(jnp.float32),
                                           grads)
        norm = None
    elif adaptive:
        scaled = asam_leaves if callable(asam_leaves) else (
            lambda path: asam_scaled(path, asam_leaves))
        scale = _asam_scale(params, scaled, eta)
        scaled_grads = jax.tree_util.tree_map(
            lambda t, g: t * g.astype(jnp.float32), scale, grads)
        norm = tree_norm(scaled_grads)
        direction = jax.tree_util.tree_map(lambda t, tg: t * tg, scale, scaled_grads)
    else:
        direction = jax.tree_util.tree_map(lambda g: g.astype(jnp.float32), grads)
        norm = tree_norm(grads)
    factor = rho if norm is None or not normalize else rho / (norm + eps)
    return jax.tree_util.tree_map(
        lambda d, w: (factor * d).astype(w.dtype), direction, params)


def project_to_ball(e, rho):
    """e scaled back onto the L2 ball of radius rho if it lies outside."""
    norm = tree_norm(e)
    factor = jnp.minimum(1.0, rho / jnp.maximum(norm, 1e-30))
    return jax.tree_util.tree_map(lambda x: (factor * x).astype(x.dtype), e)


# ---------------------------------------------------------------- sam

class SAMState(NamedTuple):
    """State of `sam` and its relatives: the step count (for schedules, and the
    random direction's draws) and what the last update measured."""
    count: jnp.ndarray
    info: StepInfo


def sam(rho: ScalarOrSchedule, *, adaptive: bool = False, eta: float = 0.01,
        asam_leaves: Union[str, Callable] = "weights", ball: str = "l2",
        ascent_steps: int = 1, normalize: bool = True, eps: float = 1e-12,
        axis_name: AxisName = None, sync_perturbation: bool = False,
        grouped: bool = False, aux_init=None, seed: int = 0,
        second_pass: Optional[bool] = None) -> optax.GradientTransformationExtraArgs:
    """SAM as an optax transform: the gradient at w becomes the gradient at w + e(w).

    Use it first in a chain:

        tx = optax.chain(sam_jax.sam(0.05), optax.sgd(0.1, momentum=0.9))
        updates, state = tx.update(grads, state, params, grad_fn=grad_fn)

    Args:
      rho: radius of the neighbourhood, a float >= 0 or a schedule step -> rho.
        rho = 0 gives exactly the base optimizer's update (no second pass); a
        schedule that is 0 at a step skips the second pass at that step.
      adaptive: ASAM; e = rho * T^2 g / ||T g|| with T = |w| + eta.
      eta: ASAM's offset (0.01 as in the ASAM paper; 0 is the popular PyTorch
        port's formula).
      asam_leaves: which parameters ASAM scales: "weights" (the authors' rule:
        kernels, BatchNorm scales, embeddings by their flax, Haiku or
        PyTorch-style leaf names; see `asam_scaled`), "all", or a predicate on
        the key path. Selecting no leaf is a ValueError.
      ball: "l2" (SAM), "linf" (e = rho sign(g)) or "random" (a random
        direction of norm rho): the paper's appendix ablations.
      ascent_steps: n inner ascent steps (the paper compared 5 with 1): each
        moves rho along the normalised gradient at the current w + e and
        projects back onto the rho-ball (Andriushchenko & Flammarion's rule);
        n + 1 gradient evaluations per step.
      normalize: False is unnormalised SAM (USAM): e = rho * g.
      eps: added to the norm so a zero gradient gives e = 0, never NaN.
      axis_name: inside `pmap` / `shard_map` / `vmap`, each device perturbs
        with its own gradient (m-sharpness with m = per-device batch) and the
        returned gradient is averaged over these axes.
      sync_perturbation: average g over groups and `axis_name` before
        normalising (SAM on the global batch).
      grouped: the arguments carry a leading axis of groups (see groups.py).
      aux_init: an example of the aux grad_fn returns beside the gradient
        (None: it returns the gradient only); see the module docstring.
      seed: the random direction's draws (ball "random"), folded with the step.
      second_pass: None: skipped where rho is 0, as above (for a schedule, by
        a lax.cond on rho_t in the step); False / True: never / always, for a
        caller that knows the phase of training and compiles a step per phase
        (the trainer's late-phase SAM: XLA:CPU runs the convolutions inside a
        conditional about ten times slower).

    Returns:
      An `optax.GradientTransformationExtraArgs` whose `update` needs
      `params` and `grad_fn`.
    """
    name = "sam" if normalize else "usam"
    check_rho(name, rho)
    check_number("sam.eta", eta, 0)
    check_number("sam.eps", eps, 0, low_open=True)
    check_choice("sam.ball", ball, BALLS)
    if not callable(asam_leaves) and asam_leaves not in ASAM_LEAVES:
        raise ValueError(f"unknown sam.asam_leaves {asam_leaves!r}; allowed: "
                         f"{', '.join(ASAM_LEAVES)} or a predicate on the key path")
    check_number("sam.ascent_steps", ascent_steps, 1, integer=True)
    ascent_steps = int(ascent_steps)
    if adaptive and ball != "l2":
        raise ValueError(f"sam.adaptive=True needs sam.ball 'l2' (got {ball!r}): ASAM "
                         "scales the L2 ball")
    if ascent_steps > 1 and (ball != "l2" or adaptive or not normalize):
        raise ValueError(f"sam.ascent_steps={ascent_steps} needs sam.ball 'l2' without "
                         f"sam.adaptive, normalised (got ball={ball!r}, adaptive="
                         f"{adaptive}, normalize={normalize})")
    if sync_perturbation and not (axis_names(axis_name) or grouped):
        raise ValueError("sam.sync_perturbation=True needs an axis_name or groups")
    skip = may_skip(rho) if second_pass is None else (
        "never" if second_pass else "always")
    has_aux = aux_init is not None

    def init_fn(params):
        return SAMState(count=jnp.zeros([], jnp.int32), info=empty_info(params, aux_init))

    def update_fn(updates, state, params=None, *, grad_fn=None, aux=None, **extra_args):
        del extra_args
        check_update_args("sam", params, grad_fn, has_aux=has_aux, aux=aux,
                          needs_aux=skip != "never")
        rho_now = rho_at(rho, state.count)
        aux = aux if has_aux else None  # the caller may pass it regardless
        g = updates  # [G, ...]
        num_groups = num_groups_of(g)

        def one_pass():
            return group_mean(g), groups_info(
                evaluations=1, rho=0.0, g=g, e=None, out=g, aux=aux, params=params,
                axis_name=axis_name)

        def two_pass():
            key = jax.random.fold_in(jax.random.PRNGKey(seed), state.count)

            def perturb(g_k):
                return perturbation(g_k, params, rho_now, adaptive=adaptive, eta=eta,
                                    eps=eps, asam_leaves=asam_leaves, ball=ball,
                                    normalize=normalize, key=key)
            if sync_perturbation:
                e = broadcast_groups(perturb(pool(g, axis_name)), num_groups)
            else:
                e = jax.vmap(perturb)(g)
            for _ in range(ascent_steps - 1):
                g_inner, _ = evaluate(grad_fn, add_to_groups(params, e), axis_name,
                                      has_aux)
                if sync_perturbation:  # every ascent step on the pooled gradient
                    g_inner = broadcast_groups(pool(g_inner, axis_name), num_groups)
                e = jax.vmap(lambda e_k, g_k: project_to_ball(
                    jax.tree_util.tree_map(
                        jnp.add, e_k, perturbation(g_k, params, rho_now, eps=eps)),
                    rho_now))(e, g_inner)
            out, aux_out = evaluate(grad_fn, add_to_groups(params, e), axis_name,
                                    has_aux)
            out = optax.tree.cast_like(out, g)
            return group_mean(out), groups_info(
                evaluations=1 + ascent_steps, rho=rho_now, g=g, e=e, out=out,
                aux=aux_out, params=params, axis_name=axis_name)

        out, info = with_optional_second_pass(rho_now, skip, two_pass, one_pass)
        return pmean(out, axis_name), SAMState(count=optax.safe_increment(state.count),
                                               info=info)

    return optax.GradientTransformationExtraArgs(init_fn, plain_form(update_fn, grouped))


def asam(rho: ScalarOrSchedule, *, eta: float = 0.01,
         leaves: Union[str, Callable] = "weights",
         **kwargs) -> optax.GradientTransformationExtraArgs:
    """ASAM (Kwon et al., ICML 2021): SAM in the ball scaled by T = |w| + eta.

    e = rho * T^2 g / ||T g||. By default only the parameters the authors scale
    (SamsungLabs/ASAM, asam.py: names containing "weight", i.e. the conv and
    linear kernels, the BatchNorm scale and embeddings; flax's `kernel`,
    `scale` and `embedding`, Haiku's `w`, `scale` and `embeddings`) get
    T = |w| + eta; biases and BatchNorm offsets keep T = 1. A tree in which
    none of these names occurs is an error, not plain SAM. `leaves="all"`
    scales every leaf; a predicate on the key path chooses any other set.

    Args:
      rho: radius, a float >= 0 or a schedule step -> rho.
      eta: the offset of T = |w| + eta (0.01 as in the ASAM paper).
      leaves: "weights" (the authors' rule), "all", or a predicate on the key
        path choosing the scaled parameters.
      **kwargs: any other argument of `sam` (axis_name, sync_perturbation, ...).

    Returns:
      An `optax.GradientTransformationExtraArgs`, as `sam`.
    """
    check_rho("asam", rho)
    check_number("asam.eta", eta, 0)
    if not callable(leaves) and leaves not in ASAM_LEAVES:
        raise ValueError(f"unknown asam.leaves {leaves!r}; allowed: "
                         f"{', '.join(ASAM_LEAVES)} or a predicate on the key path")
    return sam(rho, adaptive=True, eta=eta, asam_leaves=leaves, **kwargs)


def usam(rho: ScalarOrSchedule, **kwargs) -> optax.GradientTransformationExtraArgs:
    """Unnormalised SAM (Andriushchenko & Flammarion 2022; Dai, Ahn & Sra 2023):
    e = rho * g, without dividing by ||g||.

    Args:
      rho: the step along g, a float >= 0 or a schedule; in other units than
        SAM's radius (||e|| = rho ||g||).
      **kwargs: any other argument of `sam` (axis_name, sync_perturbation, ...).

    Returns:
      An `optax.GradientTransformationExtraArgs`, as `sam`.
    """
    return sam(rho, normalize=False, **kwargs)


class PlainState(NamedTuple):
    info: StepInfo


def plain_gradient(*, axis_name: AxisName = None, grouped: bool = False,
                   aux_init=None) -> optax.GradientTransformationExtraArgs:
    """The gradient at w itself, averaged over groups and `axis_name`: the sgd
    method. One gradient evaluation per step; it reports what every method
    reports, so a trainer treats SGD like the others.

    Args:
      axis_name: the device axes to average over, if any.
      grouped: the arguments carry a leading axis of groups, as in `sam`.
      aux_init: an example of the aux reported beside the gradient, as in `sam`.

    Returns:
      An `optax.GradientTransformationExtraArgs` whose update needs no
      `grad_fn`.
    """
    has_aux = aux_init is not None

    def init_fn(params):
        return PlainState(info=empty_info(params, aux_init))

    def update_fn(updates, state, params=None, *, aux=None, **extra_args):
        del state, extra_args
        if params is None:
            raise ValueError("plain_gradient: update needs params")
        if has_aux and aux is None:
            raise ValueError("plain_gradient: with aux_init, update needs aux=")
        info = groups_info(evaluations=1, rho=0.0, g=updates, e=None, out=updates,
                           aux=aux if has_aux else None, params=params,
                           axis_name=axis_name)
        return pool(updates, axis_name), PlainState(info=info)

    return optax.GradientTransformationExtraArgs(init_fn, plain_form(update_fn, grouped))


# ------------------------------------------------------- grouped convenience

class GroupedSAMOutput(NamedTuple):
    """What `grouped_sam_gradient` returns.

    - grads: mean over groups (and over `axis_name`) of the gradient at w + e_k.
    - clean_loss, clean_aux: the first (unperturbed) pass, stacked over groups.
    - perturbed_loss, perturbed_aux: the second pass, averaged over groups (and
      `axis_name`); an integer or boolean aux leaf's mean is float32.
    """
    grads: Any
    clean_loss: jnp.ndarray
    clean_aux: Any
    perturbed_loss: jnp.ndarray
    perturbed_aux: Any


GROUP_MAPS = ("vmap", "sequential")


def _float_if_integer(tree):
    """Integer and boolean leaves as float32: their mean over groups (a count's
    mean is a fraction) must not be cast back and truncated."""
    return jax.tree_util.tree_map(
        lambda x: x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(jnp.float32),
        tree)


def grouped_sam_gradient(
    loss_fn: Callable[..., Any], params, batch, *, rho, examples_per_perturbation: int,
    adaptive: bool = False, eta: float = 0.01, eps: float = 1e-12,
    axis_name: AxisName = None, sync_perturbation: bool = False,
    group_map: str = "vmap") -> GroupedSAMOutput:
    """SAM gradient with one perturbation per group of m examples (m-sharpness).

    A convenience over the `sam` transform in grouped form: the batch (a
    pytree whose leaves have a leading example axis) is split into
    G = batch_size / m consecutive groups; each perturbs with its own gradient
    and the result is averaged over groups (and `axis_name`). With m = the
    per-device batch this is exactly the official per-device SAM.

    Args:
      loss_fn: `loss_fn(params, group_batch, group_index) -> (loss, aux)`;
        `group_index` (int32 scalar, 0..G-1 on this device) lets the caller draw
        per-group randomness (dropout) that both passes share.
      params: the weights w.
      batch: pytree of arrays with a leading axis divisible by m.
      rho: radius (float or traced scalar).
      examples_per_perturbation: m.
      adaptive, eta, eps: as in `sam`.
      axis_name: the device axis, if any.
      sync_perturbation: one perturbation from the mean gradient of all groups
        (and devices) instead of one per group.
      group_map: "vmap" runs the groups' passes at once; "sequential" one group
        after another (`lax.map`: the activation memory of one group, the same
        numbers).

    Returns:
      A `GroupedSAMOutput`.
    """
    check_rho("grouped_sam_gradient", rho)
    leaves = jax.tree_util.tree_leaves(batch)
    batch_size = leaves[0].shape[0]
    m = examples_per_perturbation
    if not isinstance(m, int) or m <= 0 or batch_size % m:
        raise ValueError(
            f"examples_per_perturbation={m!r} must be a positive divisor of the "
            f"per-device batch size {batch_size}")
    if group_map not in GROUP_MAPS:
        raise ValueError(f"group_map={group_map!r}; allowed: {', '.join(GROUP_MAPS)}")
    num_groups = batch_size // m
    groups = jax.tree_util.tree_map(
        lambda x: x.reshape((num_groups, m) + x.shape[1:]), batch)
    indices = jnp.arange(num_groups, dtype=jnp.int32)
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
    mapper = jax.vmap if group_map == "vmap" else (
        lambda fn: lambda *xs: jax.lax.map(lambda args: fn(*args), xs))

    def clean(group, index):
        return value_and_grad(per_device(params, axis_name), group, index)
    (loss, aux), g = mapper(clean)(groups, indices)

    def grad_fn(weights):
        def one(w, group, index):
            (p_loss, p_aux), p_grads = value_and_grad(w, group, index)
            return p_grads, (p_loss, _float_if_integer(p_aux))
        return mapper(one)(weights, groups, indices)

    pooled_aux = (loss, _float_if_integer(aux))
    tx = sam(rho, adaptive=adaptive, eta=eta, eps=eps, axis_name=axis_name,
             sync_perturbation=sync_perturbation, grouped=True,
             aux_init=jax.tree_util.tree_map(lambda x: x[0], pooled_aux))
    out, state = tx.update(g, tx.init(params), params, grad_fn=grad_fn, aux=pooled_aux)
    p_loss, p_aux = state.info.aux
    return GroupedSAMOutput(out, loss, aux, p_loss, p_aux)


# ------------------------------------------------- the trainer's declarations

def _build_sgd(config, ctx):
    return plain_gradient(**family.common(ctx))


def _build_sam(config, ctx):
    c = config.sam
    return sam(family.radius(c.rho, ctx), adaptive=c.adaptive, eta=c.eta,
               asam_leaves=c.asam_leaves, ball=c.ball, ascent_steps=c.ascent_steps,
               sync_perturbation=c.sync_perturbation, seed=ctx.seed,
               **family.common(ctx), **family.second_pass(ctx))


def _build_asam(config, ctx):
    c = config.asam
    return asam(family.radius(c.rho, ctx), eta=c.eta, leaves=c.leaves,
                sync_perturbation=config.sam.sync_perturbation, **family.common(ctx),
                **family.second_pass(ctx))


def _build_usam(config, ctx):
    return usam(family.radius(config.usam.rho, ctx),
                sync_perturbation=config.sam.sync_perturbation, **family.common(ctx),
                **family.second_pass(ctx))


SGD = family.Method(
    "sgd", "the base optimizer alone", "-", "sam_jax.plain_gradient", {}, _build_sgd,
    family.fixed_cost("1", "1"))

# config.sam also holds the settings every method runs under (m, the group
# loop, BatchNorm's groups, sync_perturbation): config_schema.py adds them.
SAM = family.Method(
    "sam", "gradient at w + rho g/||g|| (options: ascent_steps, the linf ball, a "
    "random direction)", "Foret et al., ICLR 2021", "sam_jax.sam", {
        "rho": family.Setting(0.05, "the radius of the perturbation (the paper's "
                              "CIFAR value)"),
        "adaptive": family.Setting(False, "ASAM (the asam method has its own "
                                   "sub-config)"),
        "eta": family.Setting(0.01, "ASAM's offset (Kwon et al.'s value)"),
        "asam_leaves": family.Setting("weights", "ASAM scales kernels and BN scales; "
                                      'or "all"'),
        "ball": family.Setting("l2", 'or "linf", "random": the paper\'s appendix '
                               "ablations"),
        "ascent_steps": family.Setting(1, "inner ascent steps (the paper compared 5 "
                                       "with 1)"),
    }, _build_sam,
    lambda c: (str(1 + c.sam.ascent_steps), str(1 + c.sam.ascent_steps)),
    radius="sam.rho", clean_pass_true_gradient=True, syncs=True,
    second_pass_schedule=family.late_phase_second_pass)

ASAM = family.Method(
    "asam", "ball scaled by |w| + eta (kernels and BatchNorm scales)",
    "Kwon et al., ICML 2021", "sam_jax.asam", {
        "rho": family.Setting(0.5, "Kwon et al.'s CIFAR value with eta 0.01"),
        "eta": family.Setting(0.01, "the offset of |w| + eta"),
        "leaves": family.Setting("weights", 'the authors\' rule; "all" scales every '
                                 "leaf"),
    }, _build_asam, family.fixed_cost("2", "2"), radius="asam.rho",
    clean_pass_true_gradient=True, syncs=True,
    second_pass_schedule=family.late_phase_second_pass)

USAM = family.Method(
    "usam", "e = rho g, unnormalised", "Andriushchenko & Flammarion, ICML 2022; Dai "
    "et al., NeurIPS 2023", "sam_jax.usam", {
        "rho": family.Setting(0.05, "||e|| = rho ||g||"),
    }, _build_usam, family.fixed_cost("2", "2"), radius="usam.rho",
    clean_pass_true_gradient=True, syncs=True,
    second_pass_schedule=family.late_phase_second_pass)
