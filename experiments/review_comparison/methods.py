"""The methods of the comparison, each with its grid of three values.

Every method is a config method (sam_jax.methods) plus overrides; `grid` is
the one hyper-parameter searched on the held-out 10% (three values for every
method), with the values from each method's paper or its authors' code
(README.md gives the sources). Learning rate 0.1, cosine, momentum 0.9 and
weight decay 5e-4 (the paper's) stay fixed, except SGD's, whose grid is its
learning rate: it has no radius to tune.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Method:
    key: str  # the row key
    label: str
    method: str  # config.method
    fixed: dict  # overrides every run of the method has
    grid_key: str  # the searched config key ...
    grid: tuple  # ... and its three values
    epochs_scale: float = 1.0  # of the protocol's epochs (cost matching)


RHO_GRID = (0.05, 0.1, 0.2)
METHODS = (
    Method("sgd", "SGD", "sgd", {}, "optimizer.learning_rate", (0.05, 0.1, 0.2)),
    Method("sgd2x", "SGD, 2x epochs (SAM's gradient evaluations)", "sgd", {},
           "optimizer.learning_rate", (0.05, 0.1, 0.2), epochs_scale=2.0),
    Method("sam", "SAM", "sam", {}, "sam.rho", RHO_GRID),
    Method("asam", "ASAM", "asam", {}, "asam.rho", (0.25, 0.5, 1.0)),
    Method("gsam", "GSAM (alpha 0.01, rho_min = rho_max / 2)", "gsam", {},
           "gsam.rho_max", RHO_GRID),
    # LookSAM's reuse steps add alpha ||g|| along the stored direction whatever
    # rho is, and the references' alpha 0.7 is 2-3x the orthogonal part of SAM's
    # own gradient here (|g_v| / |g| 0.2-0.3 at rho 0.05-0.1): alpha is the
    # hyper-parameter that matters, rho stays at SAM's 0.05 (README.md).
    Method("looksam", "LookSAM (k 5, rho 0.05)", "looksam", {"looksam.rho": 0.05},
           "looksam.alpha", (0.1, 0.3, 0.7)),
    # ESAM moves the kept half of the tensors rho / beta: these rho give SAM's
    # radii 0.05-0.2 (the authors' large-batch WRN line is rho 0.1).
    Method("esam", "ESAM (beta 0.5, gamma 0.5)", "esam", {}, "esam.rho",
           (0.025, 0.05, 0.1)),
    Method("rwp", "RWP (mix 0.5)", "rwp", {}, "rwp.sigma", (0.005, 0.01, 0.02)),
    Method("sampa", "SAMPa (lambda 0.2)", "sampa", {}, "sampa.rho", RHO_GRID),
    Method("late_sam", "Late-phase SAM (rho 0.1)", "sam", {"sam.rho": 0.1},
           "rho_schedule.start_fraction", (0.5, 0.75, 0.9)),
    Method("extragradient", "Extragradient (gamma = scale x lr)", "extragradient", {},
           "extragradient.gamma_scale", (0.5, 1.0, 2.0)),
    Method("optimistic", "Optimistic gradient (alpha 1, into SGD with momentum)",
           "optimistic", {},
           "optimistic.beta", (0.25, 0.5, 1.0)),
    # L = 4 Langevin steps, 4 gradient evaluations per step: half the epochs
    # give SAM's evaluations (2 per step).
    Method("entropy_sgd", "Entropy-SGD (L 4, half the epochs)", "entropy_sgd",
           {"entropy_sgd.inner_steps": 4}, "entropy_sgd.gamma", (0.01, 0.03, 0.1),
           epochs_scale=0.5),
    Method("swa", "SWA over SGD (from 75% of training)", "sgd",
           {"swa.start_fraction": 0.75}, "swa.learning_rate", (0.01, 0.02, 0.05)),
    Method("wasam", "SWA over SAM (WASAM, rho 0.1)", "sam", {"sam.rho": 0.1},
           "swa.start_fraction", (0.5, 0.75, 0.9)),
)
BY_KEY = {method.key: method for method in METHODS}


def gsam_overrides(method: Method, value) -> dict:
    """GSAM's radius at the end is half the peak's (the paper's ratio)."""
    return {"gsam.rho_min": value / 2} if method.key == "gsam" else {}


def overrides(method: Method, value, num_epochs: int) -> dict:
    """A run's overrides for the method at grid value `value`."""
    result = {**method.fixed, method.grid_key: value, **gsam_overrides(method, value)}
    if method.epochs_scale != 1.0:
        result["num_epochs"] = round(num_epochs * method.epochs_scale)
    return result
