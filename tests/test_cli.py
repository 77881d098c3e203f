"""sam_jax/cli.py: asking for help succeeds (absl alone exits 1); bad flags exit 2."""

import subprocess
import sys

import pytest

from helpers import REPO
from sam_jax import cli


@pytest.mark.parametrize("args, expected", [
    (["--help"], True), (["-?"], True), (["--helpfull"], True), (["-helpshort"], True),
    (["plan", "--help"], True), (["--config=x.py", "--help=true"], True),
    (["--workdir=help"], False), (["--", "--help"], False), ([], False),
    (["--helpme"], False),
])
def test_asks_for_help(args, expected):
    assert cli.asks_for_help(args) is expected


@pytest.mark.parametrize("module", ["sam_jax.main", "sam_jax.reproduce"])
def test_help_exits_0_and_an_unknown_flag_exits_2(module):
    extra = ["plan"] if module == "sam_jax.reproduce" else []
    help_run = subprocess.run([sys.executable, "-m", module, *extra, "--help"],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
    assert help_run.returncode == 0, help_run.stderr[-2000:]
    assert "--root" in help_run.stdout or "--workdir" in help_run.stdout
    bad = subprocess.run([sys.executable, "-m", module, *extra, "--no_such_flag=1"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ")
