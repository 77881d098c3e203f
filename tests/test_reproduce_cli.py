"""python -m sam_jax.reproduce: plan counts taken by hand from the paper
(PAPER.md), not from the table modules, so a dropped row fails; bad input."""

import pytest

from helpers import run_reproduce_cli


def plan_summary(capsys, *argv, root="/tmp/plan_root"):
    code, out, _ = run_reproduce_cli(capsys, "plan", f"--root={root}", *argv)
    assert code == 0
    last = out.strip().splitlines()[-1]  # "NAME: R runs, P paper cells, C cells with runs"
    words = last.split()
    return int(words[1]), int(words[3]), out


@pytest.mark.parametrize("table, runs, paper_cells", [
    # 5 models x 3 augmentations = 15 rows; x {C10, C100} x {SAM, SGD, SGD at
    # twice the epochs}; 5 seeds. The paper: SAM and SGD (the better of 1x, 2x).
    ("table1_cifar", 15 * 2 * 3 * 5, 15 * 2 * 2),
    # 3 ResNets x 3 epoch budgets x {SAM, SGD} runs, + SGD at 800 epochs for
    # the 3 400-epoch rows; each gives top-1 and top-5. The paper: SAM and SGD,
    # and SGD at twice the epochs for the 100 and 200-epoch rows.
    ("table2_imagenet", 3 * 3 * 2 + 3, 3 * 3 * 2 * 2 + 3 * 2 * 2),
    # 9 data sets x {B7, L2} x {SAM, SGD, SGD at twice the steps}.
    ("table3_finetuning", 9 * 2 * 3, 9 * 2 * 2),
    # 4 noise rates x {SGD, SGD at 2x epochs, SAM} runs; 5 methods x 4 rates
    # in the paper.
    ("table4_label_noise", 4 * 3, 5 * 4),
    # {WRN, Shake-Shake} x {Basic, AA} x {SVHN, F-MNIST} x {SAM, SGD, SGD 2x}.
    ("table5_svhn_fmnist", 2 * 2 * 2 * 3, 2 * 2 * 2 * 2),
    # m in {1, 4, 16, 64, 256}: a figure, no numbers.
    ("figure3_m_sharpness", 5, 0),
    # SGD and SAM runs; lambda_max and the ratio at 3 epochs for each.
    ("figure3_hessian", 2, 3 * 2 * 2),
    # Laptop scale: SGD and SAM x 3 seeds; the paper's 4 numbers at 3 of our epochs.
    ("cpu_scale.sharpness", 2 * 3, 3 * 4),
])
def test_plan_counts_runs_and_paper_cells(capsys, table, runs, paper_cells):
    assert plan_summary(capsys, f"--table={table}")[:2] == (runs, paper_cells)


def test_plan_seeds_rows_and_sweep(capsys):
    assert plan_summary(capsys, "--table=table1_cifar", "--seeds=2")[0] == 180
    # WRN-28-10 at 200 epochs: 3 augmentations x 2 data sets x {SAM, SGD,
    # SGD 2x} x 5 seeds; 3 x 4 paper numbers.
    assert plan_summary(capsys, "--table=table1_cifar", "--rows=wrn200_*")[:2] == (90, 12)
    assert plan_summary(capsys, "--table=table4_label_noise",
                        "--rows=sgd,mixup")[:2] == (4, 8)
    runs, paper, out = plan_summary(
        capsys, "--sweep=experiments/sweeps/rho_search.py")
    assert (runs, paper) == (6, 0)
    assert "--config.validation_split=True" in out and "--config.sam.rho=0.5" in out


def test_plan_prints_the_command_and_workdir(capsys):
    _, _, out = plan_summary(capsys, "--table=table1_cifar", "--rows=shake_cutout",
                             "--seeds=1", root="/data/t1")
    name = "cifar_shake_shake_cifar100_cutout_sgd_seed0"
    assert f"{name}\n  workdir: /data/t1/{name}\n" in out
    assert (f"  command: python -m sam_jax.main --config=configs/"
            f"cifar_shake_shake.py:cifar100,cutout,sgd --workdir=/data/t1/{name} "
            "--config.seed=0\n") in out


@pytest.mark.parametrize("argv, message", [
    (["plan", "--table=table9", "--root=/tmp/x"], "unknown table 'table9'"),
    (["plan", "--table=table1_cifar", "--rows=nope", "--root=/tmp/x"],
     "unknown row 'nope'"),
    (["launch", "--table=table1_cifar", "--launcher=k8s", "--root=/tmp/x"],
     "unknown launcher 'k8s'"),
    (["collect", "--table=table1_cifar", "--root=/tmp/x", "--format=xml"],
     "unknown format 'xml'"),
    (["plan", "--table=table1_cifar"], "--root"),
    (["frobnicate"], "unknown command 'frobnicate'"),
])
def test_bad_input_is_one_line_and_exit_code_2(capsys, argv, message):
    code, out, err = run_reproduce_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


# ------------------------------------------------------ issue 33

def write_sweep(tmp_path, body, config="configs/quickstart.py"):
    path = tmp_path / "sweep.py"
    path.write_text(f"CONFIG = {config!r}\n\n\ndef get_sweep():\n    {body}\n")
    return str(path)


def test_a_sweep_file_that_raises_is_one_line_naming_it(capsys, tmp_path):
    # Was the sweep file's traceback, exit 1.
    sweep = write_sweep(tmp_path, "return [{'sam.rho': r} for r in RHOS]")
    code, out, err = run_reproduce_cli(capsys, "sweep", f"--sweep={sweep}",
                                       f"--root={tmp_path}/runs", "--launcher=local")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"error: {sweep!r}: get_sweep() raised NameError: name 'RHOS' is not defined"]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("point, message", [
    ("{'sam.rho': -1.0}", "sam.rho=-1.0 must be a finite number >= 0"),
    ("{'sam.rh0': 0.1}", "unknown config key sam.rh0; did you mean sam.rho?"),
    ("{'batch_size': 'abc'}", "flag --config.batch_size=abc"),
])
def test_every_sweep_point_is_checked_before_the_first_launch(capsys, tmp_path, point,
                                                              message):
    # Was found by that point's own run, after the good points had started.
    sweep = write_sweep(tmp_path, f"return [{{'sam.rho': 0.05}}, {point}]")
    # --dry_run: even if the check regressed, nothing would start here.
    for launcher in ("local", "slurm"):
        code, out, err = run_reproduce_cli(capsys, "sweep", f"--sweep={sweep}",
                                           f"--root={tmp_path}/runs",
                                           f"--launcher={launcher}", "--dry_run")
        assert code == 2 and out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], lines
        assert lines[0].startswith("error: run quickstart_") and lines[0].endswith(
            "; nothing launched")
        assert not (tmp_path / "runs").exists()


def test_slurm_without_sbatch_says_the_written_files_serve(capsys, tmp_path,
                                                           monkeypatch):
    # Was FileNotFoundError: 'sbatch' as a traceback.
    monkeypatch.setenv("PATH", str(tmp_path / "empty_bin"))
    sweep = write_sweep(tmp_path, "return [{'sam.rho': 0.05}]")
    code, out, err = run_reproduce_cli(capsys, "sweep", f"--sweep={sweep}",
                                       f"--root={tmp_path}/runs", "--launcher=slurm")
    script = tmp_path / "runs" / "slurm" / "sweep.sbatch"
    commands = tmp_path / "runs" / "slurm" / "sweep.commands.tsv"
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: sbatch is not on this machine's PATH, so nothing was submitted; "
        f"{script} and {commands} are written and complete: run `sbatch {script}`")
    assert script.read_text().startswith("#!") and "sam_jax.main" in commands.read_text()
