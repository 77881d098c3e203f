"""Figure 3 (right): Hessian spectrum of WRN-40-10 (no BatchNorm) on CIFAR-10.

lambda_max and lambda_max / lambda_5 at epochs 1, 50 and 300, SGD vs SAM.
Ours come from the Lanczos measurements that configs/hessian.py logs during
training (metrics.jsonl, split "sharpness", after epoch 1 and every 50 epochs);
`launch` then runs `python -m sam_jax.analyze --workdir=RUN --what=hessian` on
the final checkpoint (RUN/analysis.json: the top eigenvalues again, used only
where the log has no record of that epoch, and the spectral density plot).
1 seed by default.

  python -m sam_jax.reproduce plan --table=figure3_hessian --root=/tmp/fig3h
"""

from sam_jax.reproduce import registry

SEEDS = 1
EPOCHS = (1, 50, 300)
COLUMNS = (("sgd_lmax", "SGD lambda_max"), ("sgd_ratio", "SGD lambda_max/lambda_5"),
           ("sam_lmax", "SAM lambda_max"), ("sam_ratio", "SAM lambda_max/lambda_5"))

# epoch -> (SGD lmax, SGD lmax/l5, SAM lmax, SAM lmax/l5), from PAPER.md.
PAPER = {
    1: (62.9, 2.5, 18.6, 3.6),
    50: (12.5, 1.7, 8.9, 1.9),
    300: (24.2, 11.4, 1.0, 2.6),
}


def get_table(seeds=None) -> registry.Table:
    seeds = seeds or SEEDS
    rows = [(f"epoch{epoch}", f"epoch {epoch}") for epoch in EPOCHS]
    paper = {(f"epoch{epoch}", column): number for epoch, numbers in PAPER.items()
             for (column, _), number in zip(COLUMNS, numbers)}

    def runs_for(row, column):
        method = column.split("_")[0]
        return registry.seeded_runs(f"configs/hessian.py:{method}", seeds=seeds,
                                    analyses=("hessian",))

    def metric_for(row, column):
        quantity = "ratio" if column.endswith("ratio") else "lambda_max"
        return f"sharpness:{row.removeprefix('epoch')}:{quantity}"

    return registry.grid_table(
        "figure3_hessian", "Figure 3: Hessian eigenvalues (WRN-40-10, no BatchNorm)",
        rows, COLUMNS, paper, runs_for, metric_for, unit="eigenvalue",
        notes="Ours from the Lanczos measurements logged during training "
              "(metrics.jsonl) and RUN/analysis.json.")
