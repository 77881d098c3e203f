"""The package as a user installs it: a wheel built from this checkout,
installed into its own directory (not editable), its CLIs run from a directory
that has nothing of the checkout. The venv provides the dependencies.

`fresh_venv` goes further: a new virtual environment with the wheel installed
into it by pip (offline: --no-index --no-deps), the running environment's
packages visible to it as a plain path (its .pth files, the editable install of
this checkout among them, are not run), so it installs in seconds."""

import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from helpers import REPO


def checkout_copy(destination):
    """The checkout's files (tracked, and untracked ones git does not ignore),
    so the build leaves no build/ or *.egg-info in the checkout itself."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:  # not a git checkout (e.g. an unpacked sdist)
        shutil.copytree(REPO, destination, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__"))
        return
    for path in filter(None, listed.stdout.split("\0")):
        source = os.path.join(REPO, path)
        if os.path.isfile(source):  # listed but deleted in the work tree: skip
            os.makedirs(os.path.dirname(os.path.join(destination, path)), exist_ok=True)
            shutil.copy2(source, os.path.join(destination, path))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from a copy of the checkout (offline: no build isolation)."""
    tmp = tmp_path_factory.mktemp("build")
    checkout_copy(tmp / "src")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp / "dist"), "."],
        cwd=tmp / "src", capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (path,) = glob.glob(str(tmp / "dist" / "sam_jax-*.whl"))
    return path


@pytest.fixture(scope="module")
def installed(tmp_path_factory, wheel):
    """(site directory holding the installed wheel, an unrelated directory, env)."""
    tmp = tmp_path_factory.mktemp("install")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q",
         "--target", str(tmp / "site"), wheel],
        capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    # Only the installed copy: not the checkout conftest.py puts on PYTHONPATH.
    env = dict(os.environ, PYTHONPATH=str(tmp / "site"))
    return str(tmp / "site"), str(elsewhere), env


def run_elsewhere(installed, *args):
    _, elsewhere, env = installed
    return subprocess.run([sys.executable, *args], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_installed_copy_is_imported_and_holds_the_configs(installed):
    site, _, _ = installed
    proc = run_elsewhere(installed, "-c", "import sam_jax, sam_jax.declarations as d; "
                         "print(sam_jax.__file__); "
                         "print(d.resolve_config('configs/quickstart.py:sgd'))")
    assert proc.returncode == 0, proc.stderr[-3000:]
    package_file, config = proc.stdout.splitlines()
    assert package_file == os.path.join(site, "sam_jax", "__init__.py")
    assert config == os.path.join(site, "sam_jax", "configs", "quickstart.py") + ":sgd"
    assert os.path.isfile(config.partition(":")[0])


def test_reproduce_plan_from_another_directory(installed, tmp_path):
    proc = run_elsewhere(installed, "-m", "sam_jax.reproduce", "plan",
                         "--table=table1_cifar", f"--root={tmp_path}/R")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("table1_cifar: 450 runs, ")
    assert not os.path.exists(tmp_path / "R")  # a plan writes nothing


def test_models_cli_from_another_directory(installed):
    proc = run_elsewhere(installed, "-m", "sam_jax.models", "--models=wrn10_1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = [line for line in proc.stdout.splitlines() if line.startswith("wrn10_1 ")]
    assert row.split()[1:3] == ["32x32x3", "10"]


def test_analysis_cli_bad_input_from_another_directory(installed, tmp_path):
    proc = run_elsewhere(installed, "-m", "sam_jax.analysis",
                         f"--workdir={tmp_path}/nothing")
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: no config.json in '{tmp_path}/nothing': not a training "
                      "workdir"]
    assert proc.stderr.strip().splitlines()[-1] == errors[0]


# ------------------------------------------------- the wheel in a fresh venv

@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory, wheel):
    """(the new environment's python, an unrelated directory, env)."""
    tmp = tmp_path_factory.mktemp("venv")
    venv = tmp / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr[-3000:]
    python = str(venv / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, timeout=60).stdout.strip()
    # The dependencies: this environment's site-packages as plain path entries,
    # after the new environment's own (so its sam_jax is the wheel's).
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    with open(os.path.join(site, "dependencies_of_the_test_env.pth"), "w") as f:
        f.write("".join(path + "\n" for path in sorted(ours)))
    install = subprocess.run(
        # --ignore-installed: the editable sam_jax of this environment is on
        # the new one's path too, and pip would take it for installed (it
        # uninstalls nothing: the wheel goes into the new environment).
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-index",
         "--no-deps", "--ignore-installed", "-q", wheel],
        capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    return python, str(elsewhere), dict(env, JAX_PLATFORMS="cpu"), site


def run_in_venv(fresh_venv, *args, timeout=300):
    python, elsewhere, env, _ = fresh_venv
    return subprocess.run([python, *args], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_fresh_venv_imports_the_wheel_not_the_checkout(fresh_venv):
    _, _, _, site = fresh_venv
    proc = run_in_venv(fresh_venv, "-c", "import sam_jax, importlib.resources as r; "
                       "print(sam_jax.__file__); print(sam_jax.__version__); "
                       "print(r.files('sam_jax').joinpath('py.typed').is_file())")
    assert proc.returncode == 0, proc.stderr[-3000:]
    package_file, version, typed = proc.stdout.split()
    assert package_file == os.path.join(site, "sam_jax", "__init__.py")
    with open(os.path.join(REPO, "sam_jax", "__init__.py")) as f:
        assert f'__version__ = "{version}"' in f.read()
    assert typed == "True"


def test_fresh_venv_main_help(fresh_venv):
    proc = run_in_venv(fresh_venv, "-m", "sam_jax.main", "--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--workdir" in proc.stdout and "--config" in proc.stdout


def test_fresh_venv_reproduce_plan(fresh_venv, tmp_path):
    proc = run_in_venv(fresh_venv, "-m", "sam_jax.reproduce", "plan",
                       "--table=table1_cifar", f"--root={tmp_path}/R")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("table1_cifar: 450 runs, ")
    assert not os.path.exists(tmp_path / "R")


def test_fresh_venv_quickstart_for_20_steps(fresh_venv, tmp_path):
    workdir = tmp_path / "quickstart"
    proc = run_in_venv(fresh_venv, "-m", "sam_jax.main",
                       "--config=configs/quickstart.py", f"--workdir={workdir}",
                       "--config.num_steps=20", timeout=600)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    with open(workdir / "results.json") as f:
        results = json.load(f)
    assert results["steps"] == 20
    assert results["gradient_evaluations"] == 40  # SAM: two per step
    assert 0 <= results["test_error"] < 0.9  # 10 classes: chance is 0.9
    assert proc.stdout.strip().splitlines()[-1].startswith("final test error ")
