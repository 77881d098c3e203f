"""A convolution whose weight gradient is one matrix product per kernel offset.

XLA:CPU runs a convolution's forward pass and its input gradient with fast
Eigen kernels, but its weight gradient (a convolution with batch and feature
dimensions swapped) many times slower than the forward pass: for WRN's first
3x3, 64-channel layer at batch 128, see experiments/benchmarks/conv_layer.md
(`scripts/benchmark.py --cases conv_weight_grad,conv_vs_torch`). Written as
dW[i, j] = x shifted by (i, j)^T @ dy, the same sum is kh * kw matrix
products, which XLA:CPU runs fast.

`conv_general_dilated` is a drop-in for `lax.conv_general_dilated` (flax's
`nn.Conv(conv_general_dilated=...)`). The forward value is lax's. The weight
gradient comes from a custom JVP whose weight-tangent term is that sum of
matrix products, so reverse mode (its transpose), forward mode and
forward-over-reverse (Hessian-vector products) all work. It applies on the CPU
backend to NHWC / HWIO convolutions without dilation or groups, the ones our
models use, and only where the products are large enough to win (below);
anything else, and every other backend (cuDNN's weight gradient is fast),
calls lax unchanged.
"""

import functools
import math
from typing import Sequence, Tuple

import jax
from jax import lax
import jax.numpy as jnp

NHWC = ("NHWC", "HWIO", "NHWC")
# Where the matrix products beat XLA:CPU's weight gradient, measured on two
# cores for 3x3 layers (16 to 320 channels, 8x8 to 32x32, batch 16 and 128):
# from 64 channels when the products have >= 16384 rows (output pixels in the
# batch), from 128 channels at >= 1024 rows. Narrower or shorter products lose
# (up to 3x at 16 channels), though by milliseconds.
WIDE_CHANNELS, WIDE_MIN_ROWS = 128, 1024
MIN_CHANNELS, MIN_ROWS = 64, 16384
_NHWC_NUMBERS = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                         out_spec=(0, 3, 1, 2))


def _conv(x, w, strides, pads, precision):
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=NHWC,
                                    precision=precision)


def _conv_as_matmuls(x, w, out_hw, strides, pads, precision):
    """The convolution as a sum over kernel offsets of matrix products; linear in w.

    Only its transpose in w runs in a gradient: dW[i, j] = x_ij^T @ dy, where
    x_ij (N, Ho, Wo, C) are the input pixels that offset (i, j) meets. A scan
    over the offsets makes one x_ij at a time: unrolled, XLA:CPU's default
    (concurrency-optimised) scheduler makes all kh * kw copies of the input at
    once, 3x the peak memory of a WRN-16-4 step at batch 128, for ~3% of speed.
    """
    kh, kw, cin, cout = w.shape
    (sh, sw), (ho, wo) = strides, out_hw
    x = lax.pad(x, jnp.zeros((), x.dtype),
                [(0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)])
    window = (x.shape[0], sh * (ho - 1) + 1, sw * (wo - 1) + 1, cin)
    w_by_offset = w.reshape(kh * kw, cin, cout)

    # Checkpointed, or the forward pass would save every x_ij as a residual.
    @jax.checkpoint
    def offset_term(k):
        x_ij = lax.dynamic_slice(x, (0, k // kw, k % kw, 0), window)[:, ::sh, ::sw, :]
        w_ij = lax.dynamic_index_in_dim(w_by_offset, k, keepdims=False)
        return lax.dot_general(x_ij, w_ij, (((3,), (0,)), ((), ())), precision=precision,
                               preferred_element_type=jnp.float32)

    # full_like, not zeros: under shard_map the carry must have x's
    # device-varying type.
    y = lax.full_like(x, 0, jnp.float32, (x.shape[0], ho, wo, cout))
    return lax.scan(lambda y, k: (y + offset_term(k), None), y,
                    jnp.arange(kh * kw, dtype=jnp.int32))[0]


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _conv_with_matmul_weight_grad(x, w, strides, pads, precision):
    return _conv(x, w, strides, pads, precision)


def _jvp(strides, pads, precision, primals, tangents):
    x, w = primals
    x_dot, w_dot = tangents
    y = _conv(x, w, strides, pads, precision)
    zero = jax.custom_derivatives.SymbolicZero
    terms = []
    if not isinstance(x_dot, zero):
        terms.append(_conv(x_dot, w, strides, pads, precision))
    if not isinstance(w_dot, zero):
        terms.append(_conv_as_matmuls(x, w_dot, y.shape[1:3], strides, pads, precision))
    if not terms:
        return y, jnp.zeros_like(y)
    return y, sum(terms[1:], terms[0]).astype(y.dtype)


_conv_with_matmul_weight_grad.defjvp(_jvp, symbolic_zeros=True)


def _matmuls_win(lhs_shape, rhs_shape, window_strides) -> bool:
    channels = min(rhs_shape[2], rhs_shape[3])
    # Output pixels in the batch (as with SAME padding; close enough otherwise).
    rows = (lhs_shape[0] * math.ceil(lhs_shape[1] / window_strides[0])
            * math.ceil(lhs_shape[2] / window_strides[1]))
    return ((channels >= WIDE_CHANNELS and rows >= WIDE_MIN_ROWS)
            or (channels >= MIN_CHANNELS and rows >= MIN_ROWS))


def _is_nhwc(dimension_numbers) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return dimension_numbers == _NHWC_NUMBERS
    return tuple(dimension_numbers) == NHWC


def _trivial(dilation) -> bool:
    return dilation is None or all(d == 1 for d in dilation)


def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding,
                         lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                         feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None):
    """`lax.conv_general_dilated`, with a fast weight gradient on XLA:CPU."""
    fast = (jax.default_backend() == "cpu" and lhs.ndim == 4 and _is_nhwc(dimension_numbers)
            and _trivial(lhs_dilation) and _trivial(rhs_dilation)
            and feature_group_count == 1 and batch_group_count == 1
            and preferred_element_type is None and lhs.dtype == rhs.dtype
            and _matmuls_win(lhs.shape, rhs.shape, window_strides))
    if not fast:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, batch_group_count=batch_group_count,
            precision=precision, preferred_element_type=preferred_element_type)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    pads: Tuple[Tuple[int, int], ...] = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _conv_with_matmul_weight_grad(lhs, rhs, tuple(int(s) for s in window_strides),
                                         pads, precision)
