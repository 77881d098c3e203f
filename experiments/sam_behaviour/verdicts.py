"""Prints a study's verdicts alone (its table's summary) for the runs under --root:

    python -m experiments.sam_behaviour.verdicts --table=edge_of_stability --root=ROOT

(the top-level README includes these files; the study README has the tables).
"""

import argparse
import os
import sys

from sam_jax.reproduce import collect
from sam_jax.reproduce import load_table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", required=True,
                        help="a sam_behaviour table: edge_of_stability, m_sweep, ...")
    parser.add_argument("--root", required=True, help="the study's --root")
    args = parser.parse_args(argv)
    table = load_table(f"sam_behaviour.{args.table}")
    cells, _ = collect.collect_table(table, os.path.abspath(args.root))
    print(table.summary(table, cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
