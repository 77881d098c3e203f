"""Every number a config holds is range-checked before any compute: nan and
inf anywhere are refused with one line naming the key, and so are values just
outside each key's documented range."""

import math

import ml_collections
import pytest

from helpers import load_config
from sam_jax import validate

# Numbers that may legitimately be any value (none so far).
UNCHECKED = set()


def numeric_keys(config, prefix=""):
    keys = []
    for key, value in config.items():
        name = prefix + key
        if isinstance(value, ml_collections.ConfigDict):
            keys += numeric_keys(value, name + ".")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            keys.append(name)
    return keys


def with_value(key, value):
    config = load_config("configs/quickstart.py")
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    with node.ignore_type():
        node[leaf] = value
    return config


QUICKSTART_NUMBERS = [k for k in numeric_keys(load_config("configs/quickstart.py"))
                      if k not in UNCHECKED]


def test_quickstart_is_valid():
    validate.validate_config(load_config("configs/quickstart.py"), 8)


@pytest.mark.parametrize("key", QUICKSTART_NUMBERS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_number_refuses_nan_and_inf_naming_the_key(key, value):
    with pytest.raises(validate.ConfigError) as error:
        validate.validate_config(with_value(key, value), 8)
    message = str(error.value)
    assert "\n" not in message
    assert key in message


# (key, a value just outside the range, a value just inside): the ranges the
# README and config_schema.py give.
EDGES = [
    ("seed", -1, 0), ("label_noise_seed", -1, 0), ("label_noise", 1.0, 0.99),
    ("label_smoothing", 1.0, 0.0), ("optimizer.momentum", -1, 0.0),
    ("optimizer.momentum", 1.0, 0.99), ("optimizer.learning_rate", 0.0, 1e-9),
    ("optimizer.weight_decay", -1e-4, 0.0), ("optimizer.grad_clip_norm", -1.0, 0.0),
    ("num_epochs", 0, 1), ("num_steps", 0, 1), ("batch_size", 0, 8),
    ("sam.rho", -0.1, 0.0), ("sam.eta", -0.1, 0.0), ("sam.ascent_steps", 0, 2),
    ("sam.examples_per_perturbation", 0, 1), ("log_every_steps", 0, 1),
    ("eval_every_epochs", 0, 1), ("checkpoint_every_steps", 0, 1),
    ("sharpness.every_epochs", -1, 0), ("sharpness.top_k", 1, 2),
    ("sharpness.num_iterations", 4, 5), ("sharpness.m", 0, 1),
    ("sharpness.rho", -1, 0.0), ("sharpness.every_steps", -1, 0),
    ("sharpness.lambda_max_iterations", 0, 1), ("randaugment.num_layers", -1, 0),
    ("randaugment.magnitude", 31, 30), ("image_size", 0, 8),
    ("train_subset", 0, 100), ("grad_accum_steps", 0, 1),
    ("esam.beta", 0.0, 1.0), ("rwp.mix", 1.5, 1.0),
    ("entropy_sgd.mean_decay", 1.0, 0.5), ("looksam.k", 0, 1),
]


@pytest.mark.parametrize("key, outside, inside", EDGES)
def test_range_edges(key, outside, inside):
    with pytest.raises(validate.ConfigError, match=key.replace(".", r"\.")):
        validate.validate_config(with_value(key, outside), 8)
    validate.validate_config(with_value(key, inside), 8)


def test_sharpness_iterations_checked_even_when_sharpness_is_off():
    # The corrected rerun must not meet an error only epoch 1 would have found.
    config = with_value("sharpness.num_iterations", 3)
    assert config.sharpness.every_epochs == 0
    with pytest.raises(validate.ConfigError, match="sharpness.num_iterations=3"):
        validate.validate_config(config, 8)


@pytest.mark.parametrize("key, value, message", [
    ("trace_probes", 1, r"sharpness.trace_probes=1 must be 0 \(off\) or >= 2"),
    ("trace_probes", 4, r"sharpness.trace_probes=4 is measured every "
                        r"sharpness.every_steps steps"),
    ("rank_examples", 64, r"sharpness.rank_examples=64 is measured every"),
    ("trace_probes", -1, r"sharpness.trace_probes=-1 must be an integer >= 0"),
    ("rank_examples", -1, r"sharpness.rank_examples=-1 must be an integer >= 0")])
def test_step_sharpness_options_need_every_steps(key, value, message):
    config = with_value(f"sharpness.{key}", value)
    with pytest.raises(validate.ConfigError, match=message) as error:
        validate.validate_config(config, 8)
    assert "\n" not in str(error.value)
    config.sharpness.every_steps = 5
    if value > 1:
        validate.validate_config(config, 8)


@pytest.mark.parametrize("ball", ["linf", "random"])
def test_asam_scaling_needs_the_l2_ball(ball):
    config = with_value("sam.ball", ball)
    validate.validate_config(config, 8)
    config.sam.adaptive = True
    with pytest.raises(validate.ConfigError, match=f"sam.ball '{'l2'}'.*{ball!r}"):
        validate.validate_config(config, 8)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_compute_dtypes_are_accepted(dtype):
    validate.validate_config(with_value("dtype", dtype), 8)


@pytest.mark.parametrize("dtype", ["float16", "float8", "bf16", 32])
def test_unknown_compute_dtype_is_refused_naming_what_is_allowed(dtype):
    with pytest.raises(validate.ConfigError) as error:
        validate.validate_config(with_value("dtype", dtype), 8)
    assert str(error.value) == (f"unknown dtype {dtype!r}; allowed: float32, "
                                "bfloat16")


def test_batch_norm_over_the_device_needs_the_groups_in_one_pass():
    config = with_value("sam.batch_norm", "device")
    validate.validate_config(config, 8)
    for group_map in ("sequential", "unrolled"):
        config.sam.group_map = group_map
        with pytest.raises(validate.ConfigError) as error:
            validate.validate_config(config, 8)
        assert str(error.value) == (
            "sam.batch_norm='device' needs sam.group_map 'vmap' or 'auto' "
            f"(got {group_map!r}): BatchNorm pools over the groups of one pass")


def test_a_data_dir_that_is_a_file_is_refused(tmp_path):
    # Issue 33: digits ignored it; every data set now refuses a regular file.
    path = tmp_path / "a_file"
    path.write_text("x")
    config = load_config("configs/quickstart.py")
    config.data_dir = str(path)
    with pytest.raises(validate.ConfigError,
                       match=f"data_dir='{path}' is a file, not a directory"):
        validate.validate_config(config, 1)
    config.data_dir = str(tmp_path)  # a directory, or one still to be made: fine
    validate.validate_config(config, 1)
    config.data_dir = str(tmp_path / "not_yet")
    validate.validate_config(config, 1)


def test_grad_accum_with_m_unset_says_m_must_be_set_and_to_what():
    # Issue 33: the message named sam.examples_per_perturbation=32, a value
    # the user never set.
    config = load_config("configs/quickstart.py")
    config.batch_size, config.grad_accum_steps = 64, 4
    assert config.sam.examples_per_perturbation is None
    with pytest.raises(validate.ConfigError) as info:
        validate.validate_config(config, 2)  # per-device 32, microbatches of 8
    message = str(info.value)
    assert "microbatches of 8" in message and "m is unset" in message
    assert "--config.sam.examples_per_perturbation=8" in message
    config.sam.examples_per_perturbation = 8
    validate.validate_config(config, 2)
