"""The method registry (sam_jax.methods): every method builds from the default
config and makes one grouped update of the declared cost; the settings a
method cannot run under are refused; the rho schedules; the `optimistic` base
(optax's optimistic gradient into SGD with momentum) against its closed form."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import logreg
from sam_jax import config_schema
from sam_jax import methods


def context(total_steps=10):
    return methods.Context(axis_name=None, aux_init={"loss": jnp.zeros([])},
                           learning_rate=optax.cosine_decay_schedule(0.1, total_steps),
                           total_steps=total_steps, seed=0)


def grouped_problem(num_groups=2):
    params, x, y = logreg.problem(n=16 * num_groups, seed=21)
    xs, ys = x.reshape(num_groups, 16, -1), y.reshape(num_groups, 16)

    def grad_fn(weights, indices=None):
        def one(w, xg, yg, chosen):
            if chosen is not None:
                xg, yg = xg[chosen], yg[chosen]
            loss, g = jax.value_and_grad(logreg.jax_loss)(w, xg, yg)
            return g, {"loss": loss}
        return jax.vmap(one)(weights, xs, ys, indices)

    losses = jax.vmap(lambda xg, yg: jnp.logaddexp(0.0, -yg * (xg @ params["kernel"]
                                                                + params["bias"])))(xs, ys)
    stacked = jax.tree_util.tree_map(lambda v: jnp.stack([v] * num_groups), params)
    g, aux = grad_fn(stacked)
    extra = dict(example_losses=losses, example_losses_fn=lambda w: jax.vmap(
        lambda wg, xg, yg: jnp.logaddexp(0.0, -yg * (xg @ wg["kernel"] + wg["bias"]))
    )(w, xs, ys))
    return params, g, aux, grad_fn, extra


def rst_trial(*, seed, step, p):
    """RST's Bernoulli trial as its docstring states it: uniform u from
    fold_in(fold_in(PRNGKey(seed), 0x525354), step), SAM iff u < p."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 0x525354), step)
    return int(float(jax.random.uniform(key)) < p)


@pytest.mark.parametrize("name", list(methods.METHODS))
def test_every_method_builds_and_updates(name):
    config = config_schema.base_config()
    config.method = name
    tx = methods.make_method(config, context())
    params, g, aux, grad_fn, extra = grouped_problem()
    out, state = jax.jit(lambda g, s: tx.update(g, s, params, grad_fn=grad_fn, aux=aux,
                                                **extra))(g, tx.init(params))
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree_util.tree_leaves(out))
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(params)
    # Passes of the first step (LookSAM's first step is a full SAM step; RST's
    # is SAM if its trial of step 0 says so; AE-SAM's first ||g||^2 is above
    # its threshold: mu_0 + c_0 sigma_0 = (0.1 + 0.9 sqrt(0.1)) ||g||^2; K-SAM's
    # two passes see its fraction of each group of 16).
    want = {"sgd": 1, "optimistic": 1, "msam": 1, "saf": 1, "mesa": 1,
            "esam": 1 + config.esam.gamma,
            "ksam": 2 * int(config.ksam.fraction * 16) / 16,
            "entropy_sgd": config.entropy_sgd.inner_steps,
            "rst": 1 + rst_trial(seed=0, step=0, p=config.rst.p)}.get(name, 2)
    assert float(state.info.gradient_evaluations) == pytest.approx(want)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_optimistic_base_closed_form(momentum):
    """h_t = (1 + beta) g_t - beta g_{t-1} into SGD with Nesterov momentum; at
    momentum 0, optax's optimistic gradient descent: -lr h_t."""
    config = config_schema.base_config()
    config.method = "optimistic"
    config.optimizer.grad_clip_norm = 0.0
    config.optimizer.schedule = "constant"
    config.optimizer.momentum = momentum
    config.optimistic.beta = 0.5
    base = methods.base_optimizer(config, 10)
    params = {"w": jnp.array([1.0, -2.0])}
    state = base.init(params)
    grads = [np.array([0.3, 0.1]), np.array([-0.2, 0.4]), np.array([0.5, 0.5])]
    previous = grads[0]  # optax >= 0.2.4: the first step uses g_0 as g_{-1}
    trace = np.zeros(2)
    for g in grads:
        updates, state = base.update({"w": jnp.asarray(g)}, state, params)
        h = (1 + 0.5) * g - 0.5 * previous
        trace = h + momentum * trace
        want = -config.optimizer.learning_rate * (h + momentum * trace)
        np.testing.assert_allclose(updates["w"], want, rtol=1e-6)
        previous = g


def test_rho_schedule_factor():
    config = config_schema.base_config()
    schedule = optax.cosine_decay_schedule(0.1, 100)
    assert methods.rho_factor(config, 100, schedule) is None
    config.rho_schedule.start_fraction = 0.75
    factor = methods.rho_factor(config, 100, schedule)
    assert [float(factor(c)) for c in (0, 74, 75, 99)] == [0.0, 0.0, 1.0, 1.0]
    config.rho_schedule.start_fraction = 0.0
    config.rho_schedule.warmup_fraction = 0.1
    factor = methods.rho_factor(config, 100, schedule)
    np.testing.assert_allclose([float(factor(c)) for c in (0, 4, 9, 50)],
                               [0.1, 0.5, 1.0, 1.0], rtol=1e-6)
    config.rho_schedule.warmup_fraction = 0.0
    config.rho_schedule.kind = "lr"
    factor = methods.rho_factor(config, 100, schedule)
    assert float(factor(50)) == pytest.approx(float(schedule(50)) / 0.1, rel=1e-6)


def test_late_phase_steps_cost_one_pass_until_the_start():
    config = config_schema.base_config()
    config.rho_schedule.start_fraction = 0.5
    tx = methods.make_method(config, context(total_steps=4))
    params, g, aux, grad_fn, _ = grouped_problem()
    state = tx.init(params)
    update = jax.jit(lambda g, s: tx.update(g, s, params, grad_fn=grad_fn, aux=aux))
    made = []
    for _ in range(4):
        out, state = update(g, state)
        made.append(float(state.info.gradient_evaluations))
        if len(made) <= 2:  # SGD: the mean of the groups' gradients
            for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(g)):
                np.testing.assert_allclose(a, np.mean(b, axis=0), rtol=1e-6)
    assert made == [1.0, 1.0, 2.0, 2.0]


@pytest.mark.parametrize("method", ["sam", "asam", "usam", "looksam"])
def test_steps_picked_by_the_second_pass_schedule_equal_the_cond(method):
    """The trainer's late-phase SAM and LookSAM (a transform with
    Context.second_pass True and one with False, picked per step by
    second_pass_schedule) make the updates, states and costs of the one
    transform that decides by lax.cond inside the step."""
    config = config_schema.base_config()
    config.method = method
    config.rho_schedule.start_fraction = 0.5 if method != "looksam" else 0.0
    config.looksam.k = 3
    at = methods.second_pass_schedule(config, 6)
    want_schedule = ([True, False, False, True, False, False] if method == "looksam"
                     else [False, False, False, True, True, True])
    assert [at(step) for step in range(6)] == want_schedule
    params, g, aux, grad_fn, _ = grouped_problem()

    def make(second_pass):
        tx = methods.make_method(config, dataclasses.replace(context(total_steps=6),
                                                             second_pass=second_pass))
        return tx, jax.jit(lambda g, s: tx.update(g, s, params, grad_fn=grad_fn, aux=aux))
    cond_tx, cond_update = make(None)
    updates = {True: make(True)[1], False: make(False)[1]}
    cond_state = picked_state = cond_tx.init(params)
    for step in range(6):
        want, cond_state = cond_update(g, cond_state)
        got, picked_state = updates[at(step)](g, picked_state)
        for a, b in zip(jax.tree_util.tree_leaves((got, picked_state)),
                        jax.tree_util.tree_leaves((want, cond_state)), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # Each transform makes its passes whatever the step: no cond inside.
    for second_pass, evaluations in ((False, 1.0), (True, 2.0)):
        for state in (cond_tx.init(params), picked_state):
            _, state = updates[second_pass](g, state)
            assert float(state.info.gradient_evaluations) == evaluations


def test_no_second_pass_schedule_where_the_step_decides_nothing():
    config = config_schema.base_config()
    assert methods.second_pass_schedule(config, 4) is None  # sam, constant rho
    config.rho_schedule.start_fraction, config.method = 0.5, "rwp"
    assert methods.second_pass_schedule(config, 4) is None  # never skips a pass


@pytest.mark.parametrize("method, overrides, message", [
    ("gsam", {"sam.sync_perturbation": True}, "does not support sam.sync_perturbation"),
    ("looksam", {"grad_accum_steps": 2}, "keeps state from the whole batch"),
    ("sam", {"grad_accum_steps": 2, "sam.sync_perturbation": True},
     "never holds at once"),
    ("extragradient", {"rho_schedule.start_fraction": 0.5}, "applies to a radius"),
])
def test_settings_a_method_cannot_run_under(method, overrides, message):
    config = config_schema.base_config()
    config.method = method
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        (config[section] if section else config)[name] = value
    assert message in methods.problem(config, per_device_batch=8, microbatch=4)


def _bad_values(default):
    """Values no numeric setting allows: not finite, or a negative count."""
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return []
    return [-1] if isinstance(default, int) else [float("nan"), float("inf")]


@pytest.mark.parametrize("name", [m.name for m in methods.REGISTRY if m.settings])
def test_every_declared_setting_is_in_the_schema_and_its_bad_values_are_refused(name):
    """A method's declaration is its schema: each setting is a key of
    base_config() with its default, and a value outside its range is refused by
    the validation in one line naming `method.key` (its constructor's check)."""
    from sam_jax import validate
    method = methods.get(name)
    for key, setting in method.settings.items():
        assert config_schema.base_config()[name][key] == setting.default
        assert setting.meaning.strip()
        for value in _bad_values(setting.default):
            config = config_schema.base_config()
            config[name][key] = value
            with pytest.raises(validate.ConfigError) as error:
                validate.validate_config(config, 8)
            message = str(error.value)
            assert "\n" not in message and f"{name}.{key}=" in message, message
