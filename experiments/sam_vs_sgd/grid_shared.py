"""sam_vs_sgd.grid_shared: the grid values every budget plan runs
(study.SHARED_GRID), the same runs as sam_vs_sgd.grid's; PROTOCOL.md, "Budget"."""

from . import grid
from .. import sam_vs_sgd as study


def get_table(seeds=None):
    return grid.get_table(seeds, values=study.SHARED_GRID, name="sam_vs_sgd.grid_shared")
