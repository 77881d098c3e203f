"""Table 4's protocol on the digits: SAM vs SGD, clean and 20-80% symmetric noise.

Clean test accuracy %, mean over seeds. The paper's numbers (CIFAR-10,
ResNet-32) are not comparable in level; the claim compared is the trend: SAM's
advantage grows with the noise rate.
"""

from .. import cpu_scale
from sam_jax.reproduce import registry

NOISE = (("clean", "clean"), ("noise20", "20% noise"), ("noise40", "40% noise"),
         ("noise60", "60% noise"), ("noise80", "80% noise"))
COLUMNS = (("sgd", "SGD"), ("sam", "SAM (rho 0.1)"))


def get_table(seeds=None) -> registry.Table:
    seeds = seeds or cpu_scale.SEEDS
    return registry.grid_table(
        "cpu_scale.label_noise", "Digits, label noise: clean test accuracy %", NOISE,
        COLUMNS, {}, lambda noise, method: cpu_scale.runs(method, noise, {}, seeds),
        lambda row, column: "accuracy", unit="test accuracy %",
        notes="Paper (Table 4, CIFAR-10 ResNet-32, SGD / SAM): 20% 84.8 / 95.1, "
              "40% 68.8 / 93.4, 60% 48.2 / 90.5, 80% 26.2 / 77.9.")
