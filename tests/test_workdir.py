"""What counts as a different config when a workdir is reused."""

from sam_jax import workdir
from sam_jax.config_schema import base_config


def as_dict(**changes):
    config = base_config()
    config.update(changes)
    return workdir.config_as_dict(config)


def test_a_key_added_to_the_schema_with_its_default_is_no_difference():
    old = as_dict()
    del old["num_steps"]
    new = as_dict()
    assert workdir._differences(old, new, as_dict()) == []
    new["num_steps"] = 100
    assert workdir._differences(old, new, as_dict()) == ["num_steps '<absent>' -> 100"]


def test_observation_keys_do_not_count_and_real_changes_do():
    old = as_dict(log_every_steps=10, eval_batch_size=8)
    new = as_dict(log_every_steps=50, eval_batch_size=16)
    assert workdir._differences(old, new, as_dict()) == []
    new["sam"]["rho"] = 0.2
    assert workdir._differences(old, new, as_dict()) == ["sam.rho 0.05 -> 0.2"]
