"""Finetuning: read a pretrained checkpoint, check it fits the model, swap the head.

Formats (`config.pretrained.format`):
- "msgpack": one file holding `{"params": ..., "batch_stats": ...}` as written
  by `flax.serialization.msgpack_serialize` (`save_msgpack` below). The
  publicly released EfficientNet checkpoints (TF1, tensorflow/tpu
  models/official/efficientnet) become such a file with
  scripts/convert_efficientnet_checkpoint.py.
- "orbax": a run of this trainer (e.g. an ImageNet model of Table 2): its
  workdir (the latest checkpoint is used) or one `checkpoints/STEP` directory.

Every parameter and BatchNorm statistic of the model must be in the checkpoint
with the same shape, and the checkpoint must hold nothing else; the error names
the first path that differs. The classifier (`config.pretrained.head`, the
top-level "head" of every model here) is kept when its shape matches (e.g.
ImageNet finetuning of an ImageNet checkpoint) and freshly initialised
otherwise (a new number of classes); everything else comes from the checkpoint.
"""

import flax
import jax
import numpy as np

from sam_jax import checkpoint
from sam_jax.errors import BadInputError

COLLECTIONS = ("params", "batch_stats")


def save_msgpack(path: str, params, batch_stats) -> None:
    """Writes a "msgpack" pretrained checkpoint (numpy arrays, nested dicts)."""
    tree = {"params": flax.core.unfreeze(params),
            "batch_stats": flax.core.unfreeze(batch_stats)}
    tree = jax.tree_util.tree_map(np.asarray, jax.device_get(tree))
    with open(path, "wb") as f:
        f.write(flax.serialization.msgpack_serialize(tree))


def read_checkpoint(path: str, fmt: str) -> dict:
    """{"params": ..., "batch_stats": ...} of numpy arrays from a checkpoint."""
    try:
        if fmt == "msgpack":
            with open(path, "rb") as f:
                tree = flax.serialization.msgpack_restore(f.read())
        elif fmt == "orbax":
            tree = checkpoint.read_tree(path)
        else:
            raise BadInputError(f"unknown pretrained.format {fmt!r}; allowed: msgpack, orbax")
    except BadInputError:
        raise
    except Exception as e:  # msgpack / orbax raise many types for a bad file
        raise BadInputError(f"pretrained.path={path!r} cannot be read as format "
                          f"{fmt!r} ({checkpoint.first_line(e)})") from e
    if not isinstance(tree, dict) or "params" not in tree:
        raise BadInputError(f"pretrained.path={path!r} holds no 'params' tree (format "
                          f"{fmt!r} wants {{'params': ..., 'batch_stats': ...}})")
    return {name: jax.tree_util.tree_map(np.asarray, tree.get(name) or {})
            for name in COLLECTIONS}


def _flat(variables: dict) -> dict[str, object]:
    """{"params/stem_conv/kernel": array, ...} over both collections."""
    flat = {}
    for name in COLLECTIONS:
        for key, value in flax.traverse_util.flatten_dict(
                flax.core.unfreeze(variables.get(name) or {})).items():
            flat["/".join((name,) + key)] = value
    return flat


def _is_head(key: str, head: str) -> bool:
    return key.split("/")[1] == head


def check_fits(pretrained: dict, model_variables: dict, *, head: str = "head",
               where: str = "pretrained checkpoint", model_name: str = "the model"
               ) -> None:
    """Raises BadInputError naming the first path whose presence or shape differs.

    The head is left out of the comparison (it may have another class count).
    """
    collections = lambda tree: {name: tree.get(name) or {} for name in COLLECTIONS}
    mismatch = checkpoint.first_mismatch(
        collections(pretrained), collections(model_variables),
        skip=lambda path: _is_head(path, head))
    if mismatch:
        raise BadInputError(f"{where} does not fit {model_name}: {mismatch}")
    if not any(_is_head(k, head) for k in _flat(model_variables)):
        raise BadInputError(f"pretrained.head={head!r}: {model_name} has no top-level "
                          f"params entry of that name")


def merge(pretrained: dict, model_variables: dict, *, head: str = "head"
          ) -> tuple[dict, bool]:
    """The model's variables with everything but a mismatching head replaced.

    Returns (variables, head_kept): the head comes from the checkpoint when all
    its shapes equal the model's, else it is the model's (fresh) one. Arrays
    take the model's dtypes.
    """
    theirs = _flat(pretrained)
    ours = _flat(model_variables)
    head_keys = [k for k in ours if _is_head(k, head)]
    head_kept = all(k in theirs and np.shape(theirs[k]) == np.shape(ours[k])
                    for k in head_keys)
    merged = {}
    for key, value in ours.items():
        if _is_head(key, head) and not head_kept:
            merged[key] = value
        else:
            merged[key] = np.asarray(theirs[key], dtype=np.asarray(value).dtype)
    unflat = flax.traverse_util.unflatten_dict(
        {tuple(k.split("/")): v for k, v in merged.items()})
    return {name: unflat.get(name, {}) for name in COLLECTIONS}, head_kept


def load(config, params, batch_stats) -> tuple[dict, dict, bool]:
    """(params, batch_stats, head_kept): `config.pretrained`'s weights placed into
    the model's freshly initialised `params` / `batch_stats`, after checking."""
    path, fmt, head = (config.pretrained.path, config.pretrained.format,
                       config.pretrained.head)
    pretrained = read_checkpoint(path, fmt)
    fresh = {"params": params, "batch_stats": batch_stats}
    check_fits(pretrained, fresh, head=head, where=f"pretrained checkpoint {path!r}",
               model_name=f"model {config.model.name!r}")
    variables, head_kept = merge(pretrained, fresh, head=head)
    return variables["params"], variables["batch_stats"], head_kept
