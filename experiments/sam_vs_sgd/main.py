"""The main tables (PROTOCOL.md, "Methods" and "Seeds"): each method at its
condition's pick (picks.json), seeds 1..n, test error beside the regime
(training error clean; the share of corrupted labels memorised at 80% noise)
and the cost.

  python -m sam_jax.reproduce launch --table=sam_vs_sgd.clean --root=ROOT
  python -m sam_jax.reproduce launch --table=sam_vs_sgd.noise80 --root=ROOT
"""

from . import gates
from . import grid
from . import pick
from .. import sam_vs_sgd as study
from sam_jax.reproduce import registry

# key, label, base method ("sgd" / "sam" grid), epochs scale, extra overrides
METHODS = (
    ("sgd", "SGD", "sgd", 1, {}),
    ("sgd2x", "SGD, 2x epochs (SAM's gradient evaluations)", "sgd", 2, {}),
    ("sam", f"SAM (m = {study.SAM_M})", "sam", 1, {}),
    ("late_sam", f"late-phase SAM (SAM for the last "
                 f"{100 - round(100 * study.LATE_SAM_START)}% of steps)", "sam", 1,
     {"rho_schedule.start_fraction": study.LATE_SAM_START}),
    ("swa", "SWA over SGD (from 75% of training)", "sgd", 1, study.SWA),
)
BY_KEY = {key: (label, base, scale, extra) for key, label, base, scale, extra in METHODS}
REGIME = {"clean": ("train_error", "training error %"),
          "noise80": ("memorised", "corrupted labels memorised %")}


def seeds(noise: str) -> range:
    return range(1, study.SEEDS[noise] + 1)


def metric(key: str, column: str, noise: str) -> str:
    """SWA's rows report the averaged weights."""
    name = {"error": "error", "regime": REGIME[noise][0]}.get(column, column)
    return f"swa_{name}" if key == "swa" and column in ("error", "regime") else name


def method_runs(key: str, noise: str, picks: dict, gated: dict, run_seeds=None) -> tuple:
    _, base, scale, extra = BY_KEY[key]
    overrides = grid.method_overrides(base, picks[noise][base], noise, gated, scale)
    return study.runs(base, noise, {**overrides, **extra},
                      run_seeds if run_seeds is not None else seeds(noise))


def get_condition_table(noise: str, run_seeds=None, picks=None, gated=None
                        ) -> registry.Table:
    gated = gated or gates.read_gated()
    picks = picks or pick.read_picks()
    columns = (("error", "test error %"), ("regime", REGIME[noise][1]),
               ("kilo_gradient_evaluations", "gradient evaluations (k)"),
               ("train_seconds", "train seconds (one core)"))
    rows = tuple((key, f"{label} ({'lr' if base == 'sgd' else 'rho'} "
                       f"{registry.format_value(picks[noise][base])})")
                 for key, label, base, _, _ in METHODS)
    label = dict(study.CONDITIONS)[noise]
    return registry.grid_table(
        f"sam_vs_sgd.{noise}", f"SAM against SGD, {label}: {gated['model']}, "
        f"{gated['epochs']} epochs", rows, columns, {},
        lambda row, column: method_runs(row, noise, picks, gated, run_seeds),
        lambda row, column: metric(row, column, noise),
        unit="test error % / regime % / thousands of gradient evaluations / seconds")


def get_clean_table(seeds=None) -> registry.Table:
    return get_condition_table("clean", range(1, seeds + 1) if seeds else None)


def get_noise80_table(seeds=None) -> registry.Table:
    return get_condition_table("noise80", range(1, seeds + 1) if seeds else None)
