"""Study 1: the edge of stability of full-batch GD, SAM and USAM.

Full-batch steps at a constant learning rate lr = 0.1 (2 / lr = 20) on 512
Fashion-MNIST images (sam_behaviour.FULL_BATCH_PROTOCOL); every 5 steps the
trainer logs lambda_max of the training loss on the same 512 images beside
the closed-form edges of sam_jax/analysis/stability.py:
  GD:   2 / lr                                         (Cohen et al., 2021)
  SAM:  (||g|| / 2 rho) (sqrt(1 + 8 rho / (lr ||g||)) - 1), below 2 / lr and
        falling with the gradient norm                 (Long & Bartlett, 2023)
  USAM: (sqrt(1 + 8 rho / lr) - 1) / (2 rho), constant (Agarwala & Dauphin, 2023)
The prediction: after a phase of progressive sharpening, lambda_max stops at
the method's edge and hovers there (ratio lambda_max / edge near 1); SAM's
lambda_max follows its edge down as ||g|| falls. Columns: the means over the
last quarter of training (steps 90-120) unless marked.
"""

from .. import sam_behaviour as study
from sam_jax.reproduce import registry

ROWS = (("sgd", "GD (SGD, full batch)"), ("sam0.01", "SAM rho 0.01"),
        ("sam0.05", "SAM rho 0.05"), ("sam0.2", "SAM rho 0.2"),
        ("usam0.05", "USAM rho 0.05"))
COLUMNS = (("lmax", "lambda_max"), ("edge", "predicted edge"),
           ("ratio", "lambda_max / edge"), ("lmax_max", "largest lambda_max"),
           ("grad_norm", "gradient norm"), ("loss", "training loss (last)"),
           ("error", "test error % (last)"))
METRICS = {"lmax": "stability:lambda_max:late", "edge": "stability:edge:late",
           "ratio": "stability:edge_ratio:late", "lmax_max": "stability:lambda_max:max",
           "grad_norm": "stability:grad_norm:late", "loss": "stability:loss:last",
           "error": "error"}


def row_runs(row: str, seeds: int) -> tuple:
    if row == "sgd":
        return study.runs("sgd", {}, seeds, study.FULL_BATCH_PROTOCOL)
    method, rho = ("usam", row[4:]) if row.startswith("usam") else ("sam", row[3:])
    return study.runs(method, {f"{method}.rho": float(rho)}, seeds,
                      study.FULL_BATCH_PROTOCOL)


def get_table(seeds=None) -> registry.Table:
    seeds = seeds or study.SEEDS
    return registry.grid_table(
        "sam_behaviour.edge_of_stability",
        "Fashion-MNIST, full batch: lambda_max against the edges of stability",
        ROWS, COLUMNS, {}, lambda row, column: row_runs(row, seeds),
        lambda row, column: METRICS[column],
        unit="the column's quantity", plot=plot, summary=summary,
        notes="Full-batch GD / SAM / USAM, lr 0.1 (2 / lr = 20), WRN-10-1 on "
              "512 images at 16x16; edge: 2 / lr for GD, SAM's at the batch's "
              "||g||, USAM's; means over steps 90-120.")


# Decided before the runs: "at its edge" means a mean lambda_max / edge over
# the last quarter of training within these bounds.
AT_EDGE = (0.8, 1.25)


def summary(table: registry.Table, cells) -> str:
    """The verdict per row, from each seed's records: lambda_max / edge over the
    last quarter of training (its mean per seed; the mean over seeds decides),
    at its edge or not, below 2 / lr or not; then whether the late lambda_max
    (mean over seeds) falls as rho grows."""
    metric = registry.stability_metric("lambda_max", "late")
    lines = [f"Verdicts (at its edge: mean lambda_max / edge over the last quarter "
             f"in [{AT_EDGE[0]:g}, {AT_EDGE[1]:g}], averaged over seeds):", ""]
    late = {}
    for row, label in table.rows:
        runs = _all_series(cells, row)
        if not runs:
            lines.append(f"- {label}: not run yet.")
            continue
        per_seed, every_ratio = [], []
        for records in runs:
            last = records[-1]["step"]
            ratios = [registry.stability_value(r, "edge_ratio") for r in records
                      if r["step"] >= 0.75 * last]
            ratios = [r for r in ratios if r is not None]
            per_seed.append(sum(ratios) / len(ratios))
            every_ratio += ratios
        late[row] = sum(metric({"stability": records}) for records in runs) / len(runs)
        mean = sum(per_seed) / len(per_seed)
        at_edge = AT_EDGE[0] <= mean <= AT_EDGE[1]
        inside = sum(AT_EDGE[0] <= r <= AT_EDGE[1] for r in per_seed)
        line = (f"- {label}: lambda_max / edge {mean:.2f} over {len(runs)} seeds (per "
                f"seed {', '.join(f'{r:.2f}' for r in per_seed)}; records min "
                f"{min(every_ratio):.2f}, max {max(every_ratio):.2f}, steps "
                f"{0.75 * last:g}-{last}): {'at' if at_edge else 'not at'} its edge "
                f"({inside} of {len(runs)} seeds in the band)")
        if row != "sgd":  # SAM's and USAM's edges lie below GD's
            two_over_lr = runs[-1][-1]["two_over_lr"]
            below = late[row] < two_over_lr
            line += (f"; lambda_max {late[row]:.3g} {'below' if below else 'not below'}"
                     f" 2 / lr = {two_over_lr:g}")
        lines.append(line + ".")
    if study.wall_clock(cells):
        lines += ["", study.wall_clock(cells)]
    order = [row for row in ("sgd", "sam0.01", "sam0.05", "sam0.2") if row in late]
    if len(order) > 1:
        falls = all(late[a] > late[b] for a, b in zip(order, order[1:]))
        lines += ["", "Late lambda_max (mean over seeds) along GD, SAM rho 0.01, 0.05, "
                  "0.2: " + ", ".join(f"{late[row]:.3g}" for row in order)
                  + f" ({'falls' if falls else 'does not fall'} as rho grows)."]
    return "\n".join(lines)


def _all_series(cells, row: str) -> list:
    """Each finished run's stability records of `row`, by step."""
    runs = {}
    for result in cells:
        if result.cell.row == row:
            for status in result.runs:
                records = status.outputs.get("stability")
                if records:
                    runs[status.name] = sorted(records, key=lambda r: r["step"])
    return list(runs.values())


def _series(cells, row: str):
    """The first finished run's stability records of `row` (the plot's)."""
    runs = _all_series(cells, row)
    return runs[0] if runs else []


def plot(table: registry.Table, cells, path: str) -> None:
    """lambda_max (solid) against the method's edge (dashed) and 2 / lr
    (dotted) over the steps, one panel per row; the last panel puts every
    row's lambda_max / edge together."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(row, label) for row, label in table.rows if _series(cells, row)]
    figure, axes = plt.subplots(2, 3, figsize=(15, 8.5), squeeze=False)
    axes = axes.ravel()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (row, label) in enumerate(rows[:5]):
        records = _series(cells, row)
        steps = [r["step"] for r in records]
        edges = [registry.stability_value(r, "edge") for r in records]
        ax = axes[index]
        ax.plot(steps, [r["lambda_max"] for r in records], "-o", ms=3,
                color=colors[index], label="lambda_max")
        ax.plot(steps, [r["two_over_lr"] for r in records], ":", color="k",
                label="2 / lr")
        if any(k in records[-1] for k in ("sam_edge", "usam_edge")):
            name = "SAM's edge" if "sam_edge" in records[-1] else "USAM's edge"
            ax.plot(steps, edges, "--", color="k", label=name)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.set_ylabel("lambda_max")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
        axes[5].plot(steps, [registry.stability_value(r, "edge_ratio") for r in records],
                     "-o", ms=3, color=colors[index], label=label)
    axes[5].axhline(1.0, color="k", ls=":")
    axes[5].set_title("lambda_max / predicted edge")
    axes[5].set_xlabel("step")
    axes[5].legend(fontsize=8)
    for ax in axes[len(rows):5]:
        ax.axis("off")
    figure.suptitle(table.title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)

