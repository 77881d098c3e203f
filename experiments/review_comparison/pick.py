"""Writes picks.json: each method's grid value with the lowest validation error.

  python -m experiments.review_comparison.pick --root=ROOT

from the finished runs of review_comparison.grid under ROOT. Every grid run
must have finished: a pick from part of a grid is refused.
"""

import argparse
import sys

from . import comparison
from . import methods as methods_lib
from sam_jax import workdir as workdir_lib
from sam_jax.reproduce import collect


def picks_from(root: str) -> dict:
    """{method key: {"key", "value", "validation_error": {value: error %}}}."""
    table = comparison.get_grid_table()
    cells, _ = collect.collect_table(table, root)
    picks = {}
    for method in methods_lib.METHODS:
        errors = {}
        for result in cells:
            if result.cell.row != method.key:
                continue
            value = method.grid[int(result.cell.column[1:])]
            if result.mean is None:
                raise ValueError(f"grid run of {method.key} at {method.grid_key}="
                                 f"{value} has not finished under {root}")
            errors[value] = result.mean
        best = min(method.grid, key=lambda value: errors[value])  # ties: the first
        picks[method.key] = {"key": method.grid_key, "value": best,
                             "validation_error": {str(v): round(errors[v], 4)
                                                  for v in method.grid}}
    return picks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="the grid's --root")
    parser.add_argument("--out", default=comparison.PICKS_PATH)
    args = parser.parse_args(argv)
    try:
        picks = picks_from(args.root)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    workdir_lib.write_json_atomic(args.out, picks)
    for key, pick in picks.items():
        print(f"{key}: {pick['key']} = {pick['value']}  ({pick['validation_error']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
