"""The runnable BatchNorm example keeps the first pass's statistics and learns."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import sam_jax
from helpers import load_module

example = load_module("scripts/sam_batchnorm_example.py")


def test_one_step_keeps_first_pass_statistics():
    key = jax.random.PRNGKey(1)
    x = jax.random.normal(key, (64, 8))
    batch = {"x": x, "y": (x[:, 0] > 0).astype(jnp.int32)}
    model = example.Net()
    variables = model.init(key, x, train=False)
    params, stats = variables["params"], variables["batch_stats"]
    tx = optax.chain(sam_jax.sam(rho=0.5), optax.sgd(0.1))
    step = example.make_train_step(model, tx)
    _, new_stats, _ = step(params, stats, tx.init(params), batch, key)
    # Independent reference: numpy moving average of the UNPERTURBED first
    # layer's batch statistics (momentum 0.9, from zeros / ones).
    kernel = np.asarray(params["Dense_0"]["kernel"], np.float64)
    hidden = np.asarray(x, np.float64) @ kernel + np.asarray(params["Dense_0"]["bias"])
    np.testing.assert_allclose(new_stats["BatchNorm_0"]["mean"],
                               0.1 * hidden.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(new_stats["BatchNorm_0"]["var"],
                               0.9 + 0.1 * hidden.var(0), rtol=1e-4, atol=1e-6)


def test_example_learns():
    _, _, accuracy = example.main()
    assert accuracy > 0.95
