"""Table 3: finetuning EfficientNet-B7 / L2 with and without SAM, top-1 error %.

PAPER.md states no seed count: 1 seed by default.

The "2x steps" columns are SGD at SAM's cost in passes (twice the steps, or
twice the epochs on ImageNet). The paper reports no such runs for Table 3
(its twice-the-epochs SGD is for the CIFAR table, section 3.1), so they have
no paper number.

Every run starts from `pretrained/MODEL.msgpack`, relative to the directory
`launch` runs in: convert the released checkpoints there first (see
scripts/convert_efficientnet_checkpoint.py), e.g.

  python scripts/convert_efficientnet_checkpoint.py --model=efficientnet_b7 \
      --checkpoint=/ckpt/noisy_student_efficientnet-b7 --output=pretrained/efficientnet_b7.msgpack
  python -m sam_jax.reproduce plan --table=table3_finetuning --root=/tmp/table3
"""

from sam_jax.reproduce import registry

SEEDS = 1
DATASETS = (
    ("fgvc_aircraft", "FGVC Aircraft"), ("oxford_flowers102", "Flowers"),
    ("oxford_iiit_pet", "Oxford IIIT Pets"), ("stanford_cars", "Stanford Cars"),
    ("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100"), ("birdsnap", "Birdsnap"),
    ("food101", "Food101"), ("imagenet2012", "ImageNet"),
)
COLUMNS = (("b7_sam", "EffNet-B7 + SAM"), ("b7_sgd", "EffNet-B7"),
           ("b7_sgd2x", "EffNet-B7, 2x steps"),
           ("l2_sam", "EffNet-L2 + SAM"), ("l2_sgd", "EffNet-L2"),
           ("l2_sgd2x", "EffNet-L2, 2x steps"))
# The columns that PAPER's four numbers per data set sit on.
PAPER_COLUMNS = ("b7_sam", "b7_sgd", "l2_sam", "l2_sgd")
MODELS = {"b7": "efficientnet_b7", "l2": "efficientnet_l2"}
PRETRAINED_DIR = "pretrained"

# dataset -> (B7+SAM, B7, L2+SAM, L2), from PAPER.md.
PAPER = {
    "fgvc_aircraft": (6.80, 8.15, 4.82, 5.80),
    "oxford_flowers102": (0.63, 1.16, 0.35, 0.40),
    "oxford_iiit_pet": (3.97, 4.24, 2.90, 3.08),
    "stanford_cars": (5.18, 5.94, 4.04, 4.93),
    "cifar10": (0.88, 0.95, 0.30, 0.34),
    "cifar100": (7.44, 7.68, 3.92, 4.07),
    "birdsnap": (13.64, 14.30, 9.93, 10.31),
    "food101": (7.02, 7.17, 3.82, 3.97),
    "imagenet2012": (15.14, 15.3, 11.39, 11.8),
}


def get_table(seeds=None) -> registry.Table:
    seeds = seeds or SEEDS
    paper = {(dataset, column): number for dataset, numbers in PAPER.items()
             for column, number in zip(PAPER_COLUMNS, numbers)}

    def runs_for(dataset, column):
        model, method = column.split("_")
        return registry.seeded_runs(
            f"configs/finetune.py:{MODELS[model]},{dataset},{method}",
            {"pretrained.path": f"{PRETRAINED_DIR}/{MODELS[model]}.msgpack"}, seeds=seeds)

    return registry.grid_table(
        "table3_finetuning", "Table 3: finetuning top-1 error %", DATASETS, COLUMNS,
        paper, runs_for, notes="2x steps: SGD at SAM's cost in passes (not in "
        "the paper).")
