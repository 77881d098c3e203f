"""Tests of sam_jax.reproduce.sweeps."""

import pytest

from sam_jax.reproduce import sweeps


def test_sweep_product_and_zip():
    assert sweeps.product({"a": [1, 2]}, {"b": ["x", "y"]}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert sweeps.zip({"a": [1, 2], "b": [3, 4]}) == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
    assert sweeps.product(sweeps.zip({"a": [1, 2], "b": [3, 4]}), {"c": [0]}) == [
        {"a": 1, "b": 3, "c": 0}, {"a": 2, "b": 4, "c": 0}]
    with pytest.raises(ValueError):
        sweeps.zip({"a": [1, 2], "b": [3]})
