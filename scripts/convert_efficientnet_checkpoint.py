"""Converts a released TF EfficientNet checkpoint into a finetuning checkpoint.

    python scripts/convert_efficientnet_checkpoint.py \
        --checkpoint=/ckpt/noisy_student_efficientnet-l2_475/model.ckpt \
        --model=efficientnet_l2_475 --output=/ckpt/efficientnet_l2_475.msgpack

then finetune with `--config.pretrained.path=/ckpt/efficientnet_l2_475.msgpack`
(configs/finetune.py; format "msgpack", see sam_jax/pretrained.py).

Input: the TF1 checkpoints of tensorflow/tpu models/official/efficientnet
(AutoAugment, RandAugment, AdvProp and Noisy Student B0-B7, L2, L2-475),
read with `tf.train.load_checkpoint` (a checkpoint prefix such as
`.../model.ckpt`, or its directory). Their variables are named
  {prefix}/stem/conv2d/kernel, {prefix}/stem/tpu_batch_normalization/gamma,
  {prefix}/blocks_N/conv2d/kernel (expansion), .../tpu_batch_normalization,
  .../depthwise_conv2d/depthwise_kernel, .../tpu_batch_normalization_1,
  .../se/conv2d/{kernel,bias} (reduce), .../se/conv2d_1/{kernel,bias} (expand),
  .../conv2d_1/kernel (projection), .../tpu_batch_normalization_2,
  {prefix}/head/conv2d/kernel, {prefix}/head/tpu_batch_normalization/...,
  {prefix}/head/dense/{kernel,bias}
with blocks numbered over the whole network; a block without expansion
(expand ratio 1) has depthwise_conv2d, tpu_batch_normalization, se/...,
conv2d (projection), tpu_batch_normalization_1. BatchNorm variables are gamma,
beta, moving_mean, moving_variance ("batch_normalization" instead of
"tpu_batch_normalization" is accepted too). Each variable's
ExponentialMovingAverage shadow copy (`.../kernel/ExponentialMovingAverage`)
is what the released evaluation code uses, and is used here when present
(--noema: the raw weights). Optimizer slots and other variables are ignored.

Output: one msgpack file {"params": ..., "batch_stats": ...} for our flax
EfficientNet (sam_jax/models/efficientnet.py), with the checkpoint's head
(usually 1000 classes). Depthwise kernels go from TF's (k, k, C, 1) to flax's
(k, k, 1, C); everything else keeps its layout. Every parameter and statistic
of the model must be found with its shape, and every weight of the checkpoint
must be used, else the conversion stops naming the first that is not, which
also catches a --model that does not match the checkpoint.
"""

import argparse
import re
import sys

EMA_SUFFIX = "/ExponentialMovingAverage"
BATCH_NORM_NAMES = ("tpu_batch_normalization", "batch_normalization")
# Our BatchNorm variable -> TF's.
BATCH_NORM_VARIABLES = {("params", "scale"): "gamma", ("params", "bias"): "beta",
                        ("batch_stats", "mean"): "moving_mean",
                        ("batch_stats", "var"): "moving_variance"}
_BLOCK = re.compile(r"stage(\d+)_block(\d+)$")


class ConversionError(ValueError):
    """The checkpoint cannot be converted; the message is one line."""


def _tf_layer_names(has_expansion: bool, bn: str) -> dict[str, str]:
    """Our MBConvBlock's sub-modules -> the TF block's layer names."""
    if has_expansion:
        return {"expand_conv": "conv2d", "expand_bn": bn, "depthwise_conv": "depthwise_conv2d",
                "depthwise_bn": f"{bn}_1", "project_conv": "conv2d_1",
                "project_bn": f"{bn}_2", "se/reduce_conv": "se/conv2d",
                "se/expand_conv": "se/conv2d_1"}
    return {"depthwise_conv": "depthwise_conv2d", "depthwise_bn": bn,
            "project_conv": "conv2d", "project_bn": f"{bn}_1",
            "se/reduce_conv": "se/conv2d", "se/expand_conv": "se/conv2d_1"}


def tf_names(model_shapes: dict, prefix: str, bn: str) -> dict[tuple, str]:
    """(collection, module path..., variable) of our model -> TF variable name.

    `model_shapes` is our model's flattened variables (any values), keyed by
    tuples such as ("params", "stage1_block0", "expand_conv", "kernel").
    """
    blocks = sorted({key[1] for key in model_shapes if _BLOCK.match(key[1])},
                    key=lambda name: tuple(map(int, _BLOCK.match(name).groups())))
    block_index = {name: index for index, name in enumerate(blocks)}
    expanded = {key[1] for key in model_shapes if key[2] == "expand_conv"}
    top = {"stem_conv": "stem/conv2d", "stem_bn": f"stem/{bn}",
           "top_conv": "head/conv2d", "top_bn": f"head/{bn}", "head": "head/dense"}
    names = {}
    for key in model_shapes:
        collection, module, *inner, variable = key
        if module in block_index:
            layer = _tf_layer_names(module in expanded, bn)["/".join(inner)]
            scope = f"{prefix}/blocks_{block_index[module]}/{layer}"
        else:
            scope = f"{prefix}/{top[module]}"
        if (inner or [module])[-1].endswith("_bn"):  # stem_bn, expand_bn, ...
            tf_variable = BATCH_NORM_VARIABLES[(collection, variable)]
        elif inner == ["depthwise_conv"]:
            tf_variable = "depthwise_kernel"
        else:
            tf_variable = variable  # kernel, bias
        names[key] = f"{scope}/{tf_variable}"
    return names


def _detect_prefix_and_batch_norm(tf_shapes: dict) -> tuple[str, str]:
    stems = sorted(name[:-len("/stem/conv2d/kernel")] for name in tf_shapes
                   if name.endswith("/stem/conv2d/kernel"))
    if len(stems) != 1:
        raise ConversionError(
            f"expected one '<prefix>/stem/conv2d/kernel' variable (a tensorflow/tpu "
            f"EfficientNet checkpoint), found {len(stems)}: {stems[:3]}")
    prefix = stems[0]
    for bn in BATCH_NORM_NAMES:
        if f"{prefix}/stem/{bn}/gamma" in tf_shapes:
            return prefix, bn
    raise ConversionError(f"no '{prefix}/stem/<batch norm>/gamma' variable; expected "
                          f"one of {', '.join(BATCH_NORM_NAMES)}")


def _is_model_weight(name: str, prefix: str) -> bool:
    """A weight of the network (not an optimizer slot, EMA copy or counter)."""
    last = name.rsplit("/", 1)[-1]
    return name.startswith(prefix + "/") and last in (
        "kernel", "bias", "depthwise_kernel", "gamma", "beta", "moving_mean",
        "moving_variance")


def convert(checkpoint_path: str, model_name: str, *, use_ema: bool = True):
    """Returns ({"params", "batch_stats"} numpy trees, summary line)."""
    import flax
    import jax
    import jax.numpy as jnp
    import numpy as np
    import tensorflow as tf

    from sam_jax.models import MODELS, get_model

    if not model_name.startswith("efficientnet_") or model_name not in MODELS:
        allowed = ", ".join(m for m in MODELS if m.startswith("efficientnet_"))
        raise ConversionError(f"unknown model {model_name!r}; allowed: {allowed}")
    try:
        reader = tf.train.load_checkpoint(checkpoint_path)
    except (ValueError, tf.errors.OpError) as e:
        raise ConversionError(f"cannot read TF checkpoint {checkpoint_path!r} "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    tf_shapes = reader.get_variable_to_shape_map()
    prefix, bn = _detect_prefix_and_batch_norm(tf_shapes)
    head_kernel = f"{prefix}/head/dense/kernel"
    if head_kernel not in tf_shapes:
        raise ConversionError(f"no {head_kernel!r} in the checkpoint")
    num_classes = tf_shapes[head_kernel][-1]

    model = get_model(model_name, num_classes)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                               jnp.zeros((1, 32, 32, 3))))
    flat_shapes = flax.traverse_util.flatten_dict(
        {name: flax.core.unfreeze(shapes[name]) for name in ("params", "batch_stats")})
    names = tf_names(flat_shapes, prefix, bn)

    converted, from_ema = {}, 0
    for key, name in sorted(names.items()):
        if name not in tf_shapes:
            raise ConversionError(
                f"{name!r} (for {'/'.join(key)}) is not in the checkpoint: is "
                f"--model={model_name} the checkpoint's model ({prefix})?")
        source = name + EMA_SUFFIX if use_ema and name + EMA_SUFFIX in tf_shapes else name
        from_ema += source != name
        value = reader.get_tensor(source)
        if name.endswith("/depthwise_kernel"):  # TF (k, k, C, 1) -> flax (k, k, 1, C)
            value = np.transpose(value, (0, 1, 3, 2))
        want = tuple(flat_shapes[key].shape)
        if value.shape != want:
            raise ConversionError(
                f"{name!r} has shape {tuple(value.shape)}, but {'/'.join(key)} of "
                f"{model_name} has {want}: is --model the checkpoint's model ({prefix})?")
        converted[key] = np.asarray(value, np.float32)
    unused = sorted(name for name in tf_shapes if _is_model_weight(name, prefix)
                    and name not in set(names.values()))
    if unused:
        raise ConversionError(
            f"{len(unused)} weights of the checkpoint have no place in {model_name}, "
            f"e.g. {unused[0]!r}: is --model the checkpoint's model ({prefix})?")
    tree = flax.traverse_util.unflatten_dict(converted)
    summary = (f"{prefix} -> {model_name}: {len(converted)} arrays, {from_ema} of "
               f"them from ExponentialMovingAverage, {num_classes} classes")
    return {"params": tree["params"], "batch_stats": tree.get("batch_stats", {})}, summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True,
                        help="TF checkpoint prefix (.../model.ckpt) or directory")
    parser.add_argument("--model", required=True,
                        help="our model name, e.g. efficientnet_b7, efficientnet_l2_475")
    parser.add_argument("--output", required=True, help="msgpack file to write")
    parser.add_argument("--noema", dest="ema", action="store_false",
                        help="use the raw weights, not their moving averages")
    args = parser.parse_args(argv)
    try:
        variables, summary = convert(args.checkpoint, args.model, use_ema=args.ema)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from sam_jax import pretrained
    pretrained.save_msgpack(args.output, variables["params"], variables["batch_stats"])
    print(f"{summary}; wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
