"""Command line: sharpness of a trained run.

  python -m sam_jax.analysis --workdir=RUN --what=hessian,msharpness,landscape \\
      [--num_examples=512 --top_k=5 --rho=0.05 --m=1,4,16,64 --other_workdir=RUN2]

Reads RUN's config.json and latest checkpoint (read-only), takes the first
`num_examples` training examples (the run's label noise applied, no
augmentation) and measures, with BatchNorm in evaluation mode:
- hessian: the top-k Hessian eigenvalues (Lanczos) and the spectral density
  (stochastic Lanczos quadrature, from the same Lanczos run);
- msharpness: m-sharpness at radius rho for each m;
- landscape: 1-D and 2-D slices along filter-normalised random directions and,
  with --other_workdir, the linear path from RUN (alpha 0) to RUN2 (alpha 1).
Writes analysis.json (sections of earlier analyses with other --what are kept)
and PNG plots into RUN. Bad input (no checkpoint, an unknown --what, ...) stops
with one line, exit code 2, and nothing written.
"""

import json
import math
import os

from absl import flags
from absl import logging

from sam_jax import cli
from sam_jax import workdir as workdir_lib
from sam_jax.errors import BadInputError

WHAT = ("hessian", "msharpness", "landscape")

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir to analyse.")
_WHAT = flags.DEFINE_list("what", list(WHAT), f"Analyses, any of {', '.join(WHAT)}.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 512,
                                     "First training examples analysed.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Examples per streamed batch "
                                   "(memory only; results do not depend on it).")
_TOP_K = flags.DEFINE_integer("top_k", 5, "Hessian eigenvalues reported.")
_NUM_ITERATIONS = flags.DEFINE_integer(
    "num_iterations", None, "Lanczos iterations (default max(20, 2 top_k + 10)); "
    "more resolve the density better.")
_RHO = flags.DEFINE_float("rho", 0.05, "Radius of the m-sharpness ball.")
_M = flags.DEFINE_list("m", ["1", "4", "16", "64"], "Examples per set for "
                       "m-sharpness; each must divide num_examples.")
_ASCENT_STEPS = flags.DEFINE_integer("ascent_steps", 1, "Projected gradient ascent "
                                     "steps for m-sharpness (1: the SAM step).")
_POINTS = flags.DEFINE_integer("landscape_points", 21, "Points of the 1-D slice "
                               "and of the interpolation path.")
_POINTS_2D = flags.DEFINE_integer("landscape_2d_points", 11,
                                  "Points per axis of the 2-D slice; 0 skips it.")
_RANGE = flags.DEFINE_float("landscape_range", 1.0, "Slices span [-range, range] "
                            "times the filter-normalised directions.")
_OTHER = flags.DEFINE_string("other_workdir", None, "A second run of the same "
                             "model and data (e.g. SGD vs SAM): the landscape "
                             "analysis adds the linear path between the two.")
_WITH_L2 = flags.DEFINE_bool("weight_decay_in_loss", False, "Add the run's L2 term "
                             "0.5 wd |w|^2 to the loss (shifts eigenvalues by wd).")
_SEED = flags.DEFINE_integer("seed", 0, "Lanczos start vector and directions.")


# A bad argument (the name of earlier releases).
UsageError = BadInputError


def check_arguments(*, what, num_examples, batch_size, top_k, num_iterations, rho,
                    m_values, ascent_steps, landscape_points, landscape_2d_points,
                    landscape_range=1.0):
    """Raises UsageError for arguments that are wrong whatever the run."""
    unknown = [w for w in what if w not in WHAT]
    if unknown or not what:
        raise UsageError(f"unknown --what {','.join(unknown) or '(empty)'!r}; "
                         f"allowed: {', '.join(WHAT)}")
    for name, value, low in [("num_examples", num_examples, 1),
                             ("batch_size", batch_size, 1), ("top_k", top_k, 1),
                             ("ascent_steps", ascent_steps, 1),
                             ("landscape_points", landscape_points, 2),
                             ("landscape_2d_points", landscape_2d_points, 0)]:
        if value < low:
            raise UsageError(f"--{name}={value} must be >= {low}")
    if num_iterations is not None and num_iterations < top_k:
        raise UsageError(f"--num_iterations={num_iterations} must be >= top_k={top_k}")
    if not (math.isfinite(rho) and rho >= 0):
        raise UsageError(f"--rho={rho} must be a finite number >= 0")
    if not (math.isfinite(landscape_range) and landscape_range > 0):
        raise UsageError(f"--landscape_range={landscape_range} must be a finite "
                         "number > 0")
    for m in m_values:
        if m < 1 or num_examples % m:
            raise UsageError(f"--m={m} must be >= 1 and divide --num_examples="
                             f"{num_examples}")


def _parse_m(values) -> list[int]:
    try:
        return [int(v) for v in values]
    except ValueError:
        raise UsageError(f"--m={','.join(values)} must be a list of integers") from None


def _plot(path, draw):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    draw(fig, ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_json(path, sections: dict) -> dict:
    """Merges `sections` into the JSON object at `path` (atomic replace).

    Sections of earlier analyses stay; the plot lists are joined.
    """
    merged = workdir_lib.read_json(path)
    merged = merged if isinstance(merged, dict) else {}
    plots = merged.get("plots", []) + sections.get("plots", [])
    merged.update(sections, plots=list(dict.fromkeys(plots)))
    workdir_lib.write_json_atomic(path, merged)
    return merged


def analyze(workdir: str, *, what=WHAT, num_examples: int = 512,
            batch_size: int = 256, top_k: int = 5, num_iterations=None,
            rho: float = 0.05, m_values=(1, 4, 16, 64), ascent_steps: int = 1,
            landscape_points: int = 21, landscape_2d_points: int = 11,
            landscape_range: float = 1.0, other_workdir=None,
            weight_decay_in_loss: bool = False, seed: int = 0) -> dict:
    """Runs the analyses, writes analysis.json and plots into `workdir`.

    Raises UsageError / run_io.RunError (before anything is written) on bad
    input. Returns the sections written.
    """
    import numpy as np

    from sam_jax import analysis
    from sam_jax.analysis import hessian
    from sam_jax.analysis import run_io

    what = list(dict.fromkeys(what))
    check_arguments(what=what, num_examples=num_examples, batch_size=batch_size,
                    top_k=top_k, num_iterations=num_iterations, rho=rho,
                    m_values=m_values, ascent_steps=ascent_steps,
                    landscape_points=landscape_points,
                    landscape_2d_points=landscape_2d_points)
    if other_workdir and "landscape" not in what:
        raise UsageError("--other_workdir is for the landscape analysis (the "
                         "interpolation path); add landscape to --what")
    run = run_io.load_run(workdir)
    other = None
    if other_workdir:
        other = run_io.load_run(other_workdir)
        for key, mine, theirs in [
                ("model", run.config.model.name, other.config.model.name),
                ("dataset", run.config.dataset, other.config.dataset)]:
            if mine != theirs:
                raise run_io.RunError(f"--other_workdir has {key} {theirs!r}, "
                                      f"{workdir!r} has {mine!r}")
    images, labels = run_io.training_examples(run.config, run.spec, num_examples)
    batches = run_io.make_batches(images, labels, batch_size)
    from sam_jax import optimizers  # the run's L2 term (either mode; none for AdamW)
    weight_decay = (optimizers.l2_equivalent_weight_decay(run.config)
                    if weight_decay_in_loss else 0.0)
    loss_fn = run_io.make_loss_fn(run.model, run.batch_stats, weight_decay=weight_decay,
                                  label_smoothing=run.config.label_smoothing)
    params = run.params

    sections = {
        "workdir": os.path.abspath(workdir), "step": run.step,
        "model": run.config.model.name, "dataset": run.config.dataset,
        "num_examples": num_examples, "label_noise": run.config.label_noise,
        "loss_definition": (
            f"mean cross entropy (label smoothing {run.config.label_smoothing:g})"
            + (f" + {weight_decay:g} * 0.5 |w|^2" if weight_decay else "")
            + f" over the first {num_examples} training examples (label noise "
            "applied, no augmentation), BatchNorm in evaluation mode"),
        "loss": hessian.mean_loss(loss_fn, params, batches),
        "error": run_io.error_rate(run.model, run.variables, batches),
    }
    plots = []

    if "hessian" in what:
        matvec, dim = hessian.hessian_operator(loss_fn, params, batches)
        iterations = min(dim, num_iterations or hessian.default_num_iterations(top_k))
        nodes, weights = hessian.lanczos_quadrature(
            *hessian.lanczos(matvec, dim, iterations, seed))
        top = nodes[::-1][:top_k]
        grid, density = hessian.smoothed_density([(nodes, weights)])
        sections["hessian"] = {
            "step": run.step, "top_eigenvalues": top.tolist(),
            "lambda_max": float(top[0]),
            f"lambda_max_over_lambda_{top_k}": float(top[0] / top[-1]),
            "lanczos_iterations": iterations, "seed": seed,
            "ritz_values": nodes.tolist(), "quadrature_weights": weights.tolist()}

        def draw_density(fig, ax):
            # Outliers carry weight ~1/dim: a log scale deep enough to show them.
            ax.semilogy(grid, np.maximum(density, 1e-300))
            ax.set_ylim(bottom=max(1e-12, density.max() * 1e-10),
                        top=density.max() * 3)
            for value in top:
                ax.axvline(value, color="gray", lw=0.5, ls="--")
            ax.set_xlabel("eigenvalue (dashed: top %d)" % top_k)
            ax.set_ylabel("density (SLQ, 1 run)")
            ax.set_title(f"Hessian spectrum, step {run.step}: "
                         f"$\\lambda_{{max}}$={top[0]:.3g}")
        _plot(os.path.join(workdir, "hessian_density.png"), draw_density)
        plots.append("hessian_density.png")

    if "msharpness" in what:
        values = [analysis.m_sharpness(loss_fn, params,
                                       {"image": images, "label": labels}, m=m,
                                       rho=rho, num_steps=ascent_steps)
                  for m in m_values]
        sections["msharpness"] = {"step": run.step, "rho": rho,
                                  "ascent_steps": ascent_steps,
                                  "m": list(m_values), "values": values}

        def draw_msharpness(fig, ax):
            ax.semilogx(m_values, values, "o-", base=2)
            ax.set_xlabel("m (examples per set)")
            ax.set_ylabel(f"m-sharpness ($\\rho$={rho:g})")
            ax.set_title(f"m-sharpness, step {run.step}")
        _plot(os.path.join(workdir, "msharpness.png"), draw_msharpness)
        plots.append("msharpness.png")

    if "landscape" in what:
        # Rounded so that 0 (and 1 on the path) are exact grid points.
        alphas = np.round(np.linspace(-landscape_range, landscape_range,
                                      landscape_points), 10)
        d1 = analysis.filter_normalized_direction(params, seed)
        losses = analysis.landscape_1d(loss_fn, params, batches, d1, alphas)
        section = {"step": run.step, "seed": seed, "alphas": alphas.tolist(),
                   "losses": losses.tolist(),
                   "directions": "Gaussian, filter-normalised (each output unit "
                                 "of a >=2-axis weight scaled to that unit's norm); "
                                 "biases and BatchNorm parameters zero"}

        def draw_1d(fig, ax):
            ax.plot(alphas, losses)
            ax.set_xlabel("alpha (filter-normalised direction)")
            ax.set_ylabel("training loss")
            ax.set_title(f"1-D loss slice, step {run.step}")
        _plot(os.path.join(workdir, "landscape_1d.png"), draw_1d)
        plots.append("landscape_1d.png")
        if landscape_2d_points:
            d2 = analysis.filter_normalized_direction(params, seed + 1)
            axis = np.round(np.linspace(-landscape_range, landscape_range,
                                        landscape_2d_points), 10)
            surface = analysis.landscape_2d(loss_fn, params, batches, d1, d2, axis, axis)
            section.update(alphas_2d=axis.tolist(), betas_2d=axis.tolist(),
                           losses_2d=surface.tolist())

            def draw_2d(fig, ax):
                # log10: the basin spans orders of magnitude less than the walls.
                contour = ax.contourf(axis, axis, np.log10(np.maximum(surface.T, 1e-12)),
                                      levels=20)
                fig.colorbar(contour, ax=ax, label="log10 training loss")
                ax.plot([0], [0], "w+")
                ax.set_xlabel("alpha")
                ax.set_ylabel("beta")
                ax.set_title(f"2-D loss slice, step {run.step}")
            _plot(os.path.join(workdir, "landscape_2d.png"), draw_2d)
            plots.append("landscape_2d.png")
        sections["landscape"] = section

        if other is not None:
            path_alphas = np.round(np.linspace(-0.5, 1.5, landscape_points), 10)
            variables_loss = run_io.make_variables_loss_fn(
                run.model, weight_decay=weight_decay,
                label_smoothing=run.config.label_smoothing)
            path = analysis.interpolate(variables_loss, run.variables, other.variables,
                                        batches, path_alphas)
            sections["interpolation"] = {
                "step": run.step, "other_workdir": os.path.abspath(other_workdir),
                "other_step": other.step, "alphas": path_alphas.tolist(),
                "losses": path.tolist(),
                "other_error": run_io.error_rate(other.model, other.variables, batches),
                "convention": "(1 - alpha) * this run + alpha * other run, weights "
                              "and BatchNorm running statistics alike"}

            def draw_path(fig, ax):
                ax.plot(path_alphas, path)
                ax.axvline(0, color="gray", lw=0.5)
                ax.axvline(1, color="gray", lw=0.5)
                name = lambda d: os.path.basename(os.path.normpath(d))
                ax.set_xlabel(f"alpha (0: {name(workdir)}, 1: {name(other_workdir)})")
                ax.set_ylabel("training loss")
                ax.set_title("linear interpolation")
            _plot(os.path.join(workdir, "interpolation.png"), draw_path)
            plots.append("interpolation.png")

    sections["plots"] = plots
    _write_json(workdir_lib.path(workdir, workdir_lib.ANALYSIS_FILE), sections)
    return sections


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:  # orbax logs a lot at INFO
        logging.set_verbosity(logging.WARNING)
    if not _WORKDIR.value:
        raise UsageError("--workdir is required")
    m_values = _parse_m(_M.value)
    kwargs = dict(what=_WHAT.value, num_examples=_NUM_EXAMPLES.value,
                  batch_size=_BATCH_SIZE.value, top_k=_TOP_K.value,
                  num_iterations=_NUM_ITERATIONS.value, rho=_RHO.value,
                  m_values=m_values, ascent_steps=_ASCENT_STEPS.value,
                  landscape_points=_POINTS.value,
                  landscape_2d_points=_POINTS_2D.value)
    # Argument errors come before JAX and TensorFlow are imported.
    check_arguments(landscape_range=_RANGE.value, **kwargs)
    sections = analyze(_WORKDIR.value, landscape_range=_RANGE.value,
                       other_workdir=_OTHER.value, weight_decay_in_loss=_WITH_L2.value,
                       seed=_SEED.value, **kwargs)
    summary = {k: sections[k] for k in ("step", "loss", "error")}
    if "hessian" in sections:
        summary["top_eigenvalues"] = sections["hessian"]["top_eigenvalues"]
    if "msharpness" in sections:
        summary["m_sharpness"] = dict(zip(sections["msharpness"]["m"],
                                          sections["msharpness"]["values"]))
    print(json.dumps(summary))
    print(f"wrote {workdir_lib.path(_WORKDIR.value, workdir_lib.ANALYSIS_FILE)} and "
          f"{', '.join(sections['plots'])}")


if __name__ == "__main__":
    cli.run(main)
