"""Sharpness analysis against independent references: numpy spectra, closed
forms, jax.hessian, and a tiny trained run end to end."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from jax.flatten_util import ravel_pytree

from sam_jax import analysis
from sam_jax.analysis import __main__ as analysis_cli
from sam_jax.errors import BadInputError
from sam_jax import parallel
from sam_jax.analysis import run_io

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------ references

def quadratic_data(eigenvalues, num_examples, seed=0):
    """Rows a_i with (1/N) sum a_i a_i^T = Q diag(eigenvalues) Q^T, and Q."""
    rng = np.random.default_rng(seed)
    dim = len(eigenvalues)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    u, _ = np.linalg.qr(rng.standard_normal((num_examples, dim)))
    rows = np.sqrt(num_examples) * u @ np.diag(np.sqrt(eigenvalues)) @ q.T
    return rows.astype(np.float32), q @ np.diag(eigenvalues) @ q.T


def split_params(x):
    """A flat vector of 30 as a two-leaf pytree (checks the flattening)."""
    return {"a": x[:10], "b": x[10:].reshape(4, 5)}


def quadratic_loss(params, batch):
    """Mean over examples of 0.5 (a_i . x)^2: Hessian (1/N) sum a_i a_i^T."""
    x = ravel_pytree(params)[0]
    return 0.5 * jnp.mean(jnp.square(batch["a"] @ x))


def pieces(batch, sizes):
    bounds = np.cumsum([0] + list(sizes))
    return [{k: v[s:e] for k, v in batch.items()} for s, e in zip(bounds, bounds[1:])]


def mlp_loss(params, batch):
    hidden = jnp.tanh(batch["x"] @ params["w1"] + params["b1"])
    logits = hidden @ params["w2"] + params["b2"]
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * batch["y"], axis=-1))


def mlp_problem(seed=0, num_examples=20):
    rng = np.random.default_rng(seed)
    params = {"w1": rng.normal(size=(5, 6)), "b1": rng.normal(size=6) * 0.1,
              "w2": rng.normal(size=(6, 3)), "b2": rng.normal(size=3) * 0.1}
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), params)
    batch = {"x": rng.normal(size=(num_examples, 5)).astype(np.float32),
             "y": np.eye(3, dtype=np.float32)[rng.integers(0, 3, num_examples)]}
    return params, batch


# ------------------------------------------------------------ Hessian

TOP = np.array([10.0, 7.0, 5.0, 3.0, 2.0])


def test_lanczos_recovers_the_top_k_of_a_known_spectrum():
    eigenvalues = np.concatenate([TOP, np.linspace(0.0, 1.0, 25)])
    rows, hessian = quadratic_data(eigenvalues, num_examples=60)
    params = split_params(jnp.asarray(np.random.default_rng(1).normal(size=30),
                                      jnp.float32))
    whole = {"a": rows}
    top = analysis.hessian_eigenvalues(quadratic_loss, params, [whole], k=5,
                                       num_iterations=30)
    np.testing.assert_allclose(top, TOP, rtol=1e-5)
    # Streamed over uneven batches (weighted by size), or from a callable.
    streamed = pieces(whole, [7, 23, 30])
    np.testing.assert_allclose(analysis.hessian_eigenvalues(
        quadratic_loss, params, lambda: iter(streamed), k=5, num_iterations=30),
        TOP, rtol=1e-5)
    v = split_params(jnp.asarray(np.random.default_rng(2).normal(size=30), jnp.float32))
    for batches in ([whole], streamed):
        hv = ravel_pytree(analysis.hvp(quadratic_loss, params, batches, v))[0]
        np.testing.assert_allclose(hv, hessian @ np.asarray(ravel_pytree(v)[0]),
                                   rtol=1e-5, atol=1e-5)
    # The default iteration count already settles a well-separated top 5.
    np.testing.assert_allclose(analysis.hessian_eigenvalues(
        quadratic_loss, params, streamed, k=5), TOP, rtol=1e-4)
    with pytest.raises(TypeError, match="one-shot iterator"):
        analysis.hvp(quadratic_loss, params, iter(streamed), v)


def test_spectral_density_puts_the_mass_on_the_eigenvalue_clusters():
    eigenvalues = np.array([1.0] * 15 + [5.0] * 15)
    rows, _ = quadratic_data(eigenvalues, num_examples=40)
    params = split_params(jnp.zeros(30, jnp.float32))
    grid, density = analysis.spectral_density(quadratic_loss, params, [{"a": rows}],
                                              num_iterations=30, num_runs=8)
    step = grid[1] - grid[0]
    assert np.sum(density) * step == pytest.approx(1.0, abs=1e-3)
    mass_low = np.sum(density[np.abs(grid - 1.0) < 0.5]) * step
    mass_high = np.sum(density[np.abs(grid - 5.0) < 0.5]) * step
    assert mass_low + mass_high == pytest.approx(1.0, abs=1e-3)
    assert mass_low == pytest.approx(0.5, abs=0.15)


def test_hvp_equals_jax_hessian_times_v_on_an_mlp():
    params, batch = mlp_problem()
    flat, unravel = ravel_pytree(params)
    dense = jax.jit(jax.hessian(lambda x: mlp_loss(unravel(x), batch)))(flat)
    v = jnp.asarray(np.random.default_rng(3).normal(size=flat.size), jnp.float32)
    hv = analysis.hvp(mlp_loss, params, pieces(batch, [8, 12]), unravel(v))
    np.testing.assert_allclose(ravel_pytree(hv)[0], dense @ v, rtol=1e-4, atol=1e-5)
    top = analysis.hessian_eigenvalues(mlp_loss, params, batch, k=3,
                                       num_iterations=flat.size)
    np.testing.assert_allclose(top, np.linalg.eigvalsh(np.asarray(dense, np.float64))
                               [::-1][:3], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------ m-sharpness

def centred_quadratic(num_examples=16, dim=6, seed=0):
    """loss_i(w) = 0.5 (w - c_i)^T H (w - c_i): a known Hessian H."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    hessian = q @ np.diag(np.linspace(0.5, 4.0, dim)) @ q.T
    centres = rng.normal(size=(num_examples, dim))
    w = rng.normal(size=dim)
    h = jnp.asarray(hessian, jnp.float32)

    def loss_fn(params, batch):
        d = params["w"] - batch["c"]
        return 0.5 * jnp.mean(jnp.einsum("ni,ij,nj->n", d, h, d))

    params = {"w": jnp.asarray(w, jnp.float32)}
    return loss_fn, params, {"c": centres.astype(np.float32)}, hessian, w, centres


def numpy_loss(w, hessian, centres):
    d = w - centres
    return 0.5 * np.mean(np.einsum("ni,ij,nj->n", d, hessian, d))


def test_m_sharpness_is_zero_at_rho_zero():
    params, batch = mlp_problem(num_examples=16)
    for steps in (1, 3):
        assert analysis.m_sharpness(mlp_loss, params, batch, m=4, rho=0.0,
                                    num_steps=steps) == 0.0


def test_one_step_m_sharpness_equals_the_closed_form():
    loss_fn, params, batch, hessian, w, centres = centred_quadratic()
    m, rho = 4, 0.3
    want = []
    for subset in np.split(centres, len(centres) // m):
        g = hessian @ (w - subset.mean(axis=0))
        e = rho * g / np.linalg.norm(g)
        want.append(numpy_loss(w + e, hessian, subset) - numpy_loss(w, hessian, subset))
    got = analysis.m_sharpness_per_set(loss_fn, params, batch, m=m, rho=rho)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert analysis.m_sharpness(loss_fn, params, batch, m=m, rho=rho) == \
        pytest.approx(np.mean(want), rel=1e-4)
    with pytest.raises(ValueError, match="m=5 must be >= 1 and divide the 16"):
        analysis.m_sharpness(loss_fn, params, batch, m=5, rho=rho)


def test_more_ascent_steps_never_decrease_and_stay_in_the_ball():
    loss_fn, params, batch, hessian, w, centres = centred_quadratic()
    rho = 0.5
    values = [analysis.m_sharpness(loss_fn, params, batch, m=8, rho=rho, num_steps=s)
              for s in (1, 3, 10)]
    assert all(b >= a for a, b in zip(values, values[1:])), values
    assert values[-1] > values[0]  # g is not H's top eigenvector: ascent helps
    e, gain = analysis.ascent_perturbation(loss_fn, params, batch, rho, num_steps=10)
    e = np.asarray(e["w"], np.float64)
    assert np.linalg.norm(e) <= rho * (1 + 1e-6)
    assert gain == pytest.approx(numpy_loss(w + e, hessian, centres)
                                 - numpy_loss(w, hessian, centres), rel=1e-4)
    g = hessian @ (w - centres.mean(axis=0))  # bound: rho |g| + rho^2 lmax / 2
    assert gain <= rho * np.linalg.norm(g) + 0.5 * rho ** 2 * 4.0 + 1e-5
    # The projection: outside points go to the sphere, inside points stay.
    far = {"w": jnp.full(6, 1.0)}
    near = {"w": jnp.full(6, 0.01)}
    np.testing.assert_allclose(np.linalg.norm(analysis.project_to_ball(far, rho)["w"]),
                               rho, rtol=1e-6)
    np.testing.assert_array_equal(analysis.project_to_ball(near, rho)["w"], near["w"])


# ------------------------------------------------------------ landscapes

def test_filter_normalised_direction_matches_each_filters_norm():
    rng = np.random.default_rng(0)
    params = {"conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)},
              "dense": {"kernel": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32),
                        "bias": jnp.ones(3)},
              "bn": {"scale": jnp.ones(4), "bias": jnp.zeros(4)}}
    d = analysis.filter_normalized_direction(params, seed=1)
    for out in range(4):
        np.testing.assert_allclose(
            np.linalg.norm(d["conv"]["kernel"][..., out]),
            np.linalg.norm(params["conv"]["kernel"][..., out]), rtol=1e-5)
    for out in range(3):
        np.testing.assert_allclose(np.linalg.norm(d["dense"]["kernel"][:, out]),
                                   np.linalg.norm(params["dense"]["kernel"][:, out]),
                                   rtol=1e-5)
    for zero in (d["dense"]["bias"], d["bn"]["scale"], d["bn"]["bias"]):
        np.testing.assert_array_equal(zero, 0.0)
    assert not np.allclose(d["conv"]["kernel"], params["conv"]["kernel"])
    other = analysis.filter_normalized_direction(params, seed=2)
    assert not np.allclose(d["conv"]["kernel"], other["conv"]["kernel"])


def test_landscape_and_interpolation_endpoints_are_the_losses():
    params, batch = mlp_problem()
    streamed = pieces(batch, [5, 15])
    loss = float(mlp_loss(params, batch))  # the whole set in one batch
    d1 = analysis.filter_normalized_direction(params, seed=0)
    d2 = analysis.filter_normalized_direction(params, seed=1)
    line = analysis.landscape_1d(mlp_loss, params, streamed, d1, [-0.5, 0.0, 0.5])
    assert line[1] == pytest.approx(loss, rel=1e-6)
    shifted = jax.tree_util.tree_map(lambda w, d: w + 0.5 * d, params, d1)
    assert line[2] == pytest.approx(float(mlp_loss(shifted, batch)), rel=1e-5)
    surface = analysis.landscape_2d(mlp_loss, params, streamed, d1, d2,
                                    [0.0, 0.3], [-0.2, 0.0])
    assert surface.shape == (2, 2) and surface[0, 1] == pytest.approx(loss, rel=1e-6)
    both = jax.tree_util.tree_map(lambda w, a, b: w + 0.3 * a - 0.2 * b, params, d1, d2)
    assert surface[1, 0] == pytest.approx(float(mlp_loss(both, batch)), rel=1e-5)
    other_params, _ = mlp_problem(seed=1)
    path = analysis.interpolate(mlp_loss, params, other_params, streamed, [0.0, 0.5, 1.0])
    assert path[0] == pytest.approx(loss, rel=1e-6)
    assert path[2] == pytest.approx(float(mlp_loss(other_params, batch)), rel=1e-6)
    middle = jax.tree_util.tree_map(lambda a, b: 0.5 * (a + b), params, other_params)
    assert path[1] == pytest.approx(float(mlp_loss(middle, batch)), rel=1e-5)


# ------------------------------------------------------------ a real run

def load_config(path, arg=None):
    spec = importlib.util.spec_from_file_location("config", os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """WRN-10-1 trained 1 epoch on digits (20 steps, checkpoints at 10 and 20).

    SGD (rho = 0) compiles faster than SAM; the analysis does not care how
    the weights were found.
    """
    from sam_jax import train
    config = load_config("configs/quickstart.py", "sgd")
    config.model.name = "wrn10_1"
    config.num_epochs = 1
    config.batch_size = 64
    config.eval_batch_size = 512
    config.checkpoint_every_steps = 10
    workdir = str(tmp_path_factory.mktemp("analysis") / "run")
    train.train_and_evaluate(config, workdir)
    return workdir


def test_training_examples_carry_the_runs_label_noise():
    from sam_jax import data
    config = load_config("configs/quickstart.py", "noise40")
    spec = data.get_spec(config.dataset)
    images, labels = run_io.training_examples(config, spec, 300)
    raw_images, clean = data.load_split(config.dataset, "train", None)
    noisy, corrupted = data.symmetric_label_noise(clean, 0.4, 10,
                                                  seed=config.label_noise_seed)
    np.testing.assert_array_equal(labels, noisy[:300])
    assert np.sum(labels != clean[:300]) == np.sum(corrupted[:300]) > 50
    np.testing.assert_allclose(images, (raw_images[:300] - spec.mean[0]) / spec.std[0],
                               rtol=1e-5, atol=1e-5)  # normalised, not augmented
    with pytest.raises(run_io.RunError, match="num_examples=5000 must be in"):
        run_io.training_examples(config, spec, 5000)


def listing(directory):
    return sorted(os.path.relpath(os.path.join(root, name), directory)
                  for root, dirs, files in os.walk(directory) for name in dirs + files)


def run_cli(*args):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["analyze", *args])
    try:
        analysis_cli.main(["analysis"])
    finally:
        flags.FLAGS.unparse_flags()


def test_cli_end_to_end_on_a_tiny_run(tiny_run, tmp_path):
    # The same run 10 steps earlier: a copy without its latest checkpoint.
    earlier = str(tmp_path / "earlier")
    shutil.copytree(tiny_run, earlier)
    shutil.rmtree(os.path.join(earlier, "checkpoints", "20"))
    before = listing(earlier)
    run_cli(f"--workdir={tiny_run}", "--num_examples=64", "--top_k=3",
            "--num_iterations=8", "--m=16,64", "--landscape_points=5",
            "--landscape_2d_points=3", f"--other_workdir={earlier}")
    assert listing(earlier) == before  # the other run is only read
    with open(os.path.join(tiny_run, "analysis.json")) as f:
        result = json.load(f)
    assert result["step"] == 20 and result["num_examples"] == 64
    top = result["hessian"]["top_eigenvalues"]
    assert len(top) == 3 and top == sorted(top, reverse=True) and top[0] > 0
    assert result["hessian"]["lambda_max_over_lambda_3"] == pytest.approx(top[0] / top[2])
    assert result["msharpness"]["m"] == [16, 64]
    assert all(v >= 0 for v in result["msharpness"]["values"])
    landscape = result["landscape"]
    assert landscape["losses"][landscape["alphas"].index(0.0)] == pytest.approx(
        result["loss"], rel=1e-5)
    assert np.array(landscape["losses_2d"]).shape == (3, 3)
    path = result["interpolation"]
    assert path["other_step"] == 10 and path["alphas"][1:4] == [0.0, 0.5, 1.0]
    assert path["losses"][1] == pytest.approx(result["loss"], rel=1e-5)
    assert path["losses"][3] != pytest.approx(path["losses"][1], rel=1e-3)
    for name in ("hessian_density.png", "msharpness.png", "landscape_1d.png",
                 "landscape_2d.png", "interpolation.png"):
        with open(os.path.join(tiny_run, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(result["plots"]) == sorted(
        p for p in os.listdir(tiny_run) if p.endswith(".png"))
    # A later analysis of another kind keeps the earlier sections.
    run_cli(f"--workdir={tiny_run}", "--what=msharpness", "--num_examples=64", "--m=64",
            "--rho=0")
    with open(os.path.join(tiny_run, "analysis.json")) as f:
        merged = json.load(f)
    assert merged["msharpness"]["values"] == [0.0] and "hessian" in merged
    assert merged["plots"] == result["plots"]
    # The endpoint of the path is the other run's loss, read independently.
    other = run_io.load_run(earlier)
    images, labels = run_io.training_examples(other.config, other.spec, 64)
    other_loss = analysis.mean_loss(run_io.make_loss_fn(other.model, other.batch_stats),
                                    other.params, {"image": images, "label": labels})
    assert path["losses"][3] == pytest.approx(other_loss, rel=1e-5)


def test_cli_bad_input_exits_2_and_writes_nothing(tiny_run, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sam_jax.analysis", f"--workdir={tiny_run}",
         "--what=hessian,curvature"], cwd=REPO, capture_output=True, text=True,
        timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: unknown --what 'curvature'; allowed: hessian, msharpness, landscape")
    no_checkpoint = tmp_path / "no_checkpoint"
    no_checkpoint.mkdir()
    shutil.copy(os.path.join(tiny_run, "config.json"), no_checkpoint)
    with pytest.raises(BadInputError, match="no checkpoint in"):
        run_cli(f"--workdir={no_checkpoint}")
    assert listing(str(no_checkpoint)) == ["config.json"]
    # A config that does not match the checkpoint: one line naming a weight.
    other_model = tmp_path / "other_model"
    shutil.copytree(tiny_run, other_model)
    with open(other_model / "config.json") as f:
        config = json.load(f)
    config["model"]["name"] = "wrn10_2"
    with open(other_model / "config.json", "w") as f:
        json.dump(config, f)
    before = listing(str(other_model))
    with pytest.raises(run_io.RunError, match=r"checkpoint 20 is not a wrn10_2: "
                       r"batch_stats/group0_block0/bn_2/mean has shape"):
        run_io.load_run(str(other_model))
    assert listing(str(other_model)) == before
    # Too many examples, m not dividing them: exit 2, the run untouched.
    before = {p: os.stat(os.path.join(tiny_run, p)).st_mtime_ns
              for p in listing(tiny_run)}
    for args in (["--num_examples=2000", "--m=1"], ["--num_examples=64", "--m=3"]):
        with pytest.raises(BadInputError):  # the CLI's exit 2, one line
            run_cli(f"--workdir={tiny_run}", *args)
    assert {p: os.stat(os.path.join(tiny_run, p)).st_mtime_ns
            for p in listing(tiny_run)} == before


def test_sharpness_metrics_during_training(tiny_run):
    run = run_io.load_run(tiny_run)
    images, labels = run_io.training_examples(run.config, run.spec, 128)
    state = types.SimpleNamespace(params=run.params, batch_stats=run.batch_stats)
    metrics = analysis.sharpness_metrics(run.model, state, images, labels,
                                         num_examples=64, top_k=3, m=16, rho=0.05,
                                         seed=0, num_iterations=8)
    assert set(metrics) == {"lambda_max", "lambda_3", "lambda_max_over_lambda_3",
                            "m_sharpness", "subset_loss"}
    assert metrics["lambda_max"] >= metrics["lambda_3"] > 0
    assert metrics["lambda_max_over_lambda_3"] == pytest.approx(
        metrics["lambda_max"] / metrics["lambda_3"])
    # The same numbers from the library on the subset it documents, and from
    # a state replicated over the 8-device mesh as the trainer holds it.
    subset = analysis.during_training.fixed_subset(128, 64, seed=0)
    batch = {"image": images[subset], "label": labels[subset]}
    loss_fn = run_io.make_loss_fn(run.model, run.batch_stats)
    top = analysis.hessian_eigenvalues(loss_fn, run.params, [batch], k=3, seed=0,
                                       num_iterations=8)
    assert metrics["lambda_max"] == pytest.approx(top[0], rel=1e-6)
    assert metrics["m_sharpness"] == pytest.approx(analysis.m_sharpness(
        loss_fn, run.params, batch, m=16, rho=0.05), rel=1e-6)
    mesh = parallel.make_mesh()
    replicated = types.SimpleNamespace(**jax.device_put(
        {"params": run.params, "batch_stats": run.batch_stats},
        parallel.replicated(mesh)))
    again = analysis.sharpness_metrics(run.model, replicated, images, labels,
                                       num_examples=64, top_k=3, m=16, rho=0.05, seed=0,
                                       num_iterations=8)
    for key, value in metrics.items():
        assert again[key] == pytest.approx(value, rel=1e-6), key


def test_compare_analyses_script_puts_runs_side_by_side(tmp_path):
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "scripts", "compare_analyses.py")
    for label, lmax in (("sgd", 20.0), ("sam", 8.0)):
        (tmp_path / label).mkdir()
        (tmp_path / label / "analysis.json").write_text(json.dumps({
            "step": 300, "loss": 0.01,
            "hessian": {"lambda_max": lmax, "lambda_max_over_lambda_5": lmax / 4},
            "msharpness": {"rho": 0.05, "m": [1, 16], "values": [0.3, 0.1]},
            "interpolation": {"alphas": [-0.5, 0.0, 0.5, 1.0, 1.5],
                              "losses": [9.0, 0.01, 0.5, 0.02, 7.0]}}))
    proc = subprocess.run([sys.executable, script, f"SGD={tmp_path}/sgd",
                           f"SAM={tmp_path}/sam"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "| | SGD | SAM |"
    assert "| lambda_max | 20 | 8 |" in lines
    assert "| lambda_max / lambda_5 | 5 | 2 |" in lines
    assert "| m-sharpness, m=16 (rho 0.05) | 0.1 | 0.1 |" in lines
    # The barrier between the runs: the path's maximum for alpha in [0, 1] only.
    assert "| max loss on the path to the other run | 0.5 | 0.5 |" in lines
    proc = subprocess.run([sys.executable, script, f"SGD={tmp_path}/none"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "SGD=" in proc.stderr and proc.stdout == ""
