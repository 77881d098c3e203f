"""Table 1: CIFAR-10/100 test error %, SAM vs SGD, five models x three augmentations.

The paper's numbers are means of 5 runs, so each cell has 5 seeds by default.

  python -m sam_jax.reproduce plan --table=table1_cifar --root=/tmp/table1
"""

from sam_jax.reproduce import registry

SEEDS = 5  # "mean of 5 runs"
AUGMENTATIONS = (("basic", "Basic"), ("cutout", "Cutout"), ("autoaugment", "AA"))
# model key -> (label, config path, the config ARG items before dataset/aug)
MODELS = {
    "wrn200": ("WRN-28-10 (200 ep)", "configs/cifar_wrn.py", "{dataset},{aug},200"),
    "wrn1800": ("WRN-28-10 (1800 ep)", "configs/cifar_wrn.py", "{dataset},{aug},1800"),
    "shake": ("Shake-Shake 26 2x96d", "configs/cifar_shake_shake.py", "{dataset},{aug}"),
    "pyramid": ("PyramidNet", "configs/cifar_pyramidnet.py",
                "{dataset},{aug},vanilla"),
    "pyramid_shakedrop": ("PyramidNet+ShakeDrop", "configs/cifar_pyramidnet.py",
                          "{dataset},{aug},shakedrop"),
}
COLUMNS = (("c10_sam", "CIFAR-10 SAM"), ("c10_sgd", "CIFAR-10 SGD"),
           ("c100_sam", "CIFAR-100 SAM"), ("c100_sgd", "CIFAR-100 SGD"))
DATASETS = {"c10": "cifar10", "c100": "cifar100"}

# (model, aug) -> (C10 SAM, C10 SGD, C100 SAM, C100 SGD), from PAPER.md.
PAPER = {
    ("wrn200", "basic"): (2.7, 3.5, 16.5, 18.8),
    ("wrn200", "cutout"): (2.3, 2.6, 14.9, 16.9),
    ("wrn200", "autoaugment"): (2.1, 2.3, 13.6, 15.8),
    ("wrn1800", "basic"): (2.4, 3.5, 16.3, 19.1),
    ("wrn1800", "cutout"): (2.1, 2.7, 14.0, 17.4),
    ("wrn1800", "autoaugment"): (1.6, 2.2, 12.8, 16.1),
    ("shake", "basic"): (2.3, 2.7, 15.1, 17.0),
    ("shake", "cutout"): (2.0, 2.3, 14.2, 15.7),
    ("shake", "autoaugment"): (1.6, 1.9, 12.8, 14.1),
    ("pyramid", "basic"): (2.7, 4.0, 14.6, 19.7),
    ("pyramid", "cutout"): (1.9, 2.5, 12.6, 16.4),
    ("pyramid", "autoaugment"): (1.6, 1.9, 11.6, 14.6),
    ("pyramid_shakedrop", "basic"): (2.1, 2.5, 13.3, 14.5),
    ("pyramid_shakedrop", "cutout"): (1.6, 1.9, 11.3, 11.8),
    ("pyramid_shakedrop", "autoaugment"): (1.4, 1.6, 10.3, 10.6),
}


def row_key(model: str, aug: str) -> str:
    return f"{model}_{aug}"


def get_table(seeds=None) -> registry.Table:
    seeds = seeds or SEEDS
    rows = [(row_key(model, aug), f"{label} / {aug_label}")
            for model, (label, _, _) in MODELS.items() for aug, aug_label in AUGMENTATIONS]
    paper = {(row_key(model, aug), column): number
             for (model, aug), numbers in PAPER.items()
             for (column, _), number in zip(COLUMNS, numbers)}
    configs = {row_key(model, aug): (path, arg, aug)
               for model, (_, path, arg) in MODELS.items() for aug, _ in AUGMENTATIONS}

    def runs_for(row, column):
        path, arg, aug = configs[row]
        dataset, method = column.split("_")
        arg = arg.format(dataset=DATASETS[dataset], aug=aug)
        return registry.seeded_runs(f"{path}:{arg},{method}", seeds=seeds)

    return registry.grid_table(
        "table1_cifar", "Table 1: CIFAR test error %, SAM vs SGD", rows, COLUMNS,
        paper, runs_for, notes=f"Paper: mean of 5 runs; ours: {seeds} seeds.")
