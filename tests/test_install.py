"""The package as a user installs it: a wheel built from this checkout,
installed into its own directory (not editable), its CLIs run from a directory
that has nothing of the checkout. The venv provides the dependencies."""

import glob
import os
import shutil
import subprocess
import sys

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
def installed(tmp_path_factory):
    """(site directory holding the installed wheel, an unrelated directory, env)."""
    tmp = tmp_path_factory.mktemp("install")
    checkout_copy(tmp / "src")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp / "dist"), "."],
        cwd=tmp / "src", capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = glob.glob(str(tmp / "dist" / "sam_jax-*.whl"))
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
