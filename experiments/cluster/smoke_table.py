"""A three-run table for testing the launchers on a real scheduler.

configs/quickstart.py (digits, no download) shrunk to WRN-10-1, batch 32 and
1,200 steps: long enough (about a minute on a shared CPU core) to be
preempted mid-run, short enough that the whole array finishes in minutes.
scripts/slurm_localhost.sh submits it; by hand:

  python -m sam_jax.reproduce launch --table=experiments/cluster/smoke_table.py \
      --root=/tmp/sam_slurm/runs --launcher=slurm --gpus_per_node=0
"""

from sam_jax.reproduce import registry

CONFIG = "configs/quickstart.py"
TINY = {
    "model.name": "wrn10_1",
    "batch_size": 32,
    "num_steps": 1200,
    "log_every_steps": 50,
    # Several checkpoints per run, so a preempted run has saved ones to keep.
    "checkpoint_every_steps": 200,
}


def get_table(seeds=None) -> registry.Table:
    def runs_for(row, column):
        del column
        # SAM gets two seeds (2 array tasks), SGD one: 3 runs in all.
        return registry.seeded_runs(f"{CONFIG}:{row}", TINY,
                                    seeds or (2 if row == "sam" else 1))

    return registry.grid_table(
        "cluster_smoke", "Digits, WRN-10-1, 1,200 steps: test error % (launcher smoke test)",
        (("sam", "SAM"), ("sgd", "SGD")), (("error", "test error %"),), {}, runs_for,
        notes="No paper numbers: this table tests the launchers, not SAM.")
