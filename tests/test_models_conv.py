"""models/conv.py: the matmul weight gradient against lax's autodiff and numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from sam_jax.models import conv

HIGHEST = lax.Precision.HIGHEST
# (input shape, kernel shape, strides, padding): the geometries our models use
# (3x3 SAME at strides 1 and 2, 1x1 strided, the ResNet stem's 7x7) and VALID.
GEOMETRIES = [
    ((3, 9, 9, 4), (3, 3, 4, 5), (1, 1), "SAME"),
    ((3, 9, 9, 4), (3, 3, 4, 5), (2, 2), "SAME"),
    ((3, 8, 8, 4), (1, 1, 4, 6), (2, 2), "SAME"),
    ((2, 12, 12, 3), (7, 7, 3, 4), (2, 2), ((3, 3), (3, 3))),
    ((2, 8, 7, 3), (3, 2, 3, 4), (1, 2), "VALID"),
]


def pads_of(x_shape, w_shape, strides, padding):
    if isinstance(padding, str):
        return tuple(lax.padtype_to_pads(x_shape[1:3], w_shape[:2], strides, padding))
    return padding


def matmul_conv(x, w, strides, padding):
    """The conv with the matmul weight gradient, whatever the size."""
    return conv._conv_with_matmul_weight_grad(
        x, w, strides, pads_of(x.shape, w.shape, strides, padding), HIGHEST)


def lax_conv(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=conv.NHWC,
                                    precision=HIGHEST)


def problem(x_shape, w_shape, seed=0):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.standard_normal(x_shape), jnp.float32),
            jnp.asarray(rng.standard_normal(w_shape), jnp.float32))


def numpy_weight_grad(x, dy, w_shape, strides, pads):
    """dL/dw[i, j, c, o] = sum over n, p, q of x_padded[n, s*p + i, s*q + j, c] dy[n, p, q, o]."""
    x = np.pad(np.asarray(x, np.float64), [(0, 0), pads[0], pads[1], (0, 0)])
    dy = np.asarray(dy, np.float64)
    grad = np.zeros(w_shape)
    for i in range(w_shape[0]):
        for j in range(w_shape[1]):
            for p in range(dy.shape[1]):
                for q in range(dy.shape[2]):
                    grad[i, j] += np.einsum(
                        "nc,no->co", x[:, strides[0] * p + i, strides[1] * q + j], dy[:, p, q])
    return grad


@pytest.mark.parametrize("x_shape,w_shape,strides,padding", GEOMETRIES)
def test_value_and_gradients_match_lax(x_shape, w_shape, strides, padding):
    x, w = problem(x_shape, w_shape)
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w, strides, padding)))
    np.testing.assert_allclose(matmul_conv(x, w, strides, padding),
                               lax_conv(x, w, strides, padding), rtol=1e-6, atol=1e-5)
    ours = jax.grad(loss(matmul_conv), (0, 1))(x, w)
    reference = jax.grad(loss(lax_conv), (0, 1))(x, w)
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("x_shape,w_shape,strides,padding", GEOMETRIES[:4])
def test_weight_gradient_matches_numpy_loop(x_shape, w_shape, strides, padding):
    x, w = problem(x_shape, w_shape, seed=1)
    y, vjp = jax.vjp(lambda w: matmul_conv(x, w, strides, padding), w)
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)
    expected = numpy_weight_grad(x, dy, w_shape, strides,
                                 pads_of(x_shape, w_shape, strides, padding))
    np.testing.assert_allclose(vjp(jnp.asarray(dy))[0], expected, rtol=1e-5, atol=1e-4)


def test_hessian_vector_product_and_jvp_match_lax():
    x_shape, w_shape, strides, padding = GEOMETRIES[1]
    x, w = problem(x_shape, w_shape)
    v_x, v_w = problem(x_shape, w_shape, seed=3)
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w, strides, padding)))
    hvp = lambda f: jax.jvp(jax.grad(loss(f), (0, 1)), (x, w), (v_x, v_w))[1]
    for a, b in zip(hvp(matmul_conv), hvp(lax_conv)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
    jvp = lambda f: jax.jvp(lambda x, w: f(x, w, strides, padding), (x, w), (v_x, v_w))[1]
    np.testing.assert_allclose(jvp(matmul_conv), jvp(lax_conv), rtol=1e-5, atol=1e-4)


def test_vmap_over_per_group_weights_matches_lax():
    # m-sharpness: each group's perturbed pass has its own weights.
    x_shape, w_shape, strides, padding = GEOMETRIES[0]
    xs, ws = problem((2,) + x_shape, (2,) + w_shape)
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w, strides, padding)))
    ours = jax.vmap(jax.grad(loss(matmul_conv), (0, 1)))(xs, ws)
    reference = jax.vmap(jax.grad(loss(lax_conv), (0, 1)))(xs, ws)
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_bfloat16_stays_bfloat16():
    x, w = problem((2, 6, 6, 4), (3, 3, 4, 4))
    x, w = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    grads = jax.grad(lambda x, w: jnp.sum(matmul_conv(x, w, (1, 1), "SAME")
                                          .astype(jnp.float32)), (0, 1))(x, w)
    assert all(g.dtype == jnp.bfloat16 for g in grads)


def uses_matmul_weight_grad(x_shape, w_shape, strides=(1, 1), **kwargs) -> bool:
    x, w = jnp.zeros(x_shape), jnp.zeros(w_shape)
    jaxpr = jax.make_jaxpr(lambda x, w: conv.conv_general_dilated(
        x, w, strides, "SAME", dimension_numbers=conv.NHWC, **kwargs))(x, w)
    return "custom_jvp_call" in str(jaxpr)


def test_dispatch_takes_matmuls_only_where_they_win_on_cpu():
    assert jax.default_backend() == "cpu"
    assert uses_matmul_weight_grad((64, 4, 4, 128), (3, 3, 128, 128))  # wide, 1024 rows
    assert not uses_matmul_weight_grad((64, 2, 2, 128), (3, 3, 128, 128))  # 256 rows
    assert uses_matmul_weight_grad((16, 32, 32, 64), (3, 3, 64, 64))  # 16384 rows
    assert not uses_matmul_weight_grad((16, 32, 32, 64), (3, 3, 64, 64), (2, 2))
    assert not uses_matmul_weight_grad((128, 32, 32, 16), (3, 3, 16, 16))  # narrow
    assert not uses_matmul_weight_grad((128, 32, 32, 3), (3, 3, 3, 128))  # a stem
    # Groups and dilation are lax's.
    assert not uses_matmul_weight_grad((64, 4, 4, 128), (3, 3, 1, 128),
                                       feature_group_count=128)
    assert not uses_matmul_weight_grad((64, 4, 4, 128), (3, 3, 128, 128),
                                       rhs_dilation=(2, 2))


def test_flax_conv_layers_use_it():
    from sam_jax.models import layers
    module = layers.Conv3x3(128)
    x = jnp.zeros((64, 4, 4, 128))
    params = module.init(jax.random.PRNGKey(0), x)
    assert "custom_jvp_call" in str(jax.make_jaxpr(module.apply)(params, x))


def test_gradient_peak_memory_stays_near_lax():
    # XLA's static buffer assignment (no timing): the shifted inputs are made
    # one at a time, not kh * kw copies of the activations at once.
    x, w = jnp.zeros((32, 32, 32, 64)), jnp.zeros((3, 3, 64, 64))
    assert uses_matmul_weight_grad(x.shape, w.shape)

    def temp_bytes(conv_fn):
        def loss(x, w):
            h = jax.nn.relu(conv_fn(x, w, (1, 1), "SAME", dimension_numbers=conv.NHWC))
            return jnp.sum(conv_fn(h, w, (1, 1), "SAME", dimension_numbers=conv.NHWC) ** 2)
        compiled = jax.jit(jax.grad(loss, (0, 1))).lower(x, w).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    activation_bytes = x.size * 4
    assert (temp_bytes(conv.conv_general_dilated)
            <= temp_bytes(lax.conv_general_dilated) + 2 * activation_bytes)


def test_gradient_under_shard_map_matches_lax():
    # The trainer's step runs inside shard_map, where the weight gradient's
    # carry must be device-varying like the activations.
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ("batch",))
    x, w = problem((8 * 64, 4, 4, 128), (3, 3, 128, 128))
    assert uses_matmul_weight_grad((64, 4, 4, 128), w.shape)

    def grad_fn(conv_fn):
        def per_device(x, w):
            loss = lambda w: jnp.sum(jnp.sin(conv_fn(x, w, (1, 1), "SAME",
                                                     dimension_numbers=conv.NHWC)))
            return jax.lax.psum(jax.grad(loss)(w), "batch")
        return jax.jit(jax.shard_map(per_device, mesh=mesh,
                                     in_specs=(jax.P("batch"), jax.P()), out_specs=jax.P()))

    np.testing.assert_allclose(grad_fn(conv.conv_general_dilated)(x, w),
                               grad_fn(lax.conv_general_dilated)(x, w), rtol=1e-4, atol=1e-2)
