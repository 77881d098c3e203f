"""Writes picks.json: per condition, SGD's learning rate and SAM's rho with the
lowest validation error; values within study.TIE_POINTS of it tie, and the
lowest validation loss among them wins (PROTOCOL.md).

  python -m experiments.sam_vs_sgd.pick --root=ROOT

from the finished runs of sam_vs_sgd.grid under ROOT; a pick from part of a
grid is refused.
"""

import argparse
import os
import sys

from . import gates
from . import grid
from .. import sam_vs_sgd as study
from sam_jax import workdir as workdir_lib
from sam_jax.errors import BadInputError
from sam_jax.reproduce import collect

PICKS_PATH = os.path.join(os.path.dirname(__file__), "picks.json")


def choose(scores: dict) -> object:
    """scores: value -> (validation error %, validation loss). The pick."""
    best_error = min(error for error, _ in scores.values())
    # Compared in validation images (errors are multiples of 1/5,000), so
    # float rounding of the percentages cannot move a value in or out.
    images = lambda points: round(points * study.VALIDATION_EXAMPLES / 100)
    tied = [value for value, (error, _) in scores.items()
            if images(error - best_error) < images(study.TIE_POINTS)]
    return min(tied, key=lambda value: scores[value][1])


def picks_from(root: str, gated=None) -> dict:
    """{condition: {method: {"key", "value", "validation": {value: [error %, loss]}}}}."""
    gated = gated or gates.read_gated()
    cells, _ = collect.collect_table(grid.get_table(gated=gated), root)
    picks = {}
    for noise, _ in study.CONDITIONS:
        picks[noise] = {}
        for method, (key, values) in grid.METHODS.items():
            scores = {}
            for result in cells:
                if result.cell.row != f"{method}_{noise}":
                    continue
                value = values[int(result.cell.column[1:])]
                (status,) = result.runs
                outputs = status.outputs.get("results")
                if outputs is None:
                    raise BadInputError(f"grid run of {method} at {key}={value} "
                                        f"({noise}) has not finished under {root}")
                scores[value] = (100 * outputs["validation_error"],
                                 outputs["validation_loss"])
            picks[noise][method] = {
                "key": key, "value": choose(scores),
                "validation": {str(v): [round(e, 4), round(l, 6)]
                               for v, (e, l) in scores.items()}}
    return picks


def read_picks(path: str = PICKS_PATH) -> dict:
    """{condition: {method: value}}, or BadInputError saying how to make it."""
    import json
    try:
        with open(path) as f:
            picks = json.load(f)
    except FileNotFoundError:
        raise BadInputError(f"{os.path.relpath(path)} does not exist: launch sam_vs_sgd.grid, then "
                            "python -m experiments.sam_vs_sgd.pick --root=ROOT") from None
    return {noise: {method: entry["value"] for method, entry in by_method.items()}
            for noise, by_method in picks.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="the grid's --root")
    parser.add_argument("--out", default=PICKS_PATH)
    args = parser.parse_args(argv)
    try:
        picks = picks_from(args.root)
    except BadInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    workdir_lib.write_json_atomic(args.out, picks)
    for noise, by_method in picks.items():
        for method, pick in by_method.items():
            print(f"{noise} {method}: {pick['key']} = {pick['value']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
