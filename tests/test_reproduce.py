"""The paper-table machinery: plan counts, launchers, collect, one real tiny run.

Counts and numbers here are taken by hand from the paper (PAPER.md), not from
the table modules, so a dropped row or a mistyped number fails.
"""

import csv
import io
import json
import os
import subprocess
import sys
import time

import pytest

from sam_jax import reproduce  # noqa: F401  (puts experiments/ on sys.path)
from experiments import registry  # noqa: E402
from experiments import sweeps  # noqa: E402
from sam_jax.reproduce import __main__ as cli  # noqa: E402
from sam_jax.reproduce import collect  # noqa: E402
from sam_jax.reproduce import launchers  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def plan_summary(capsys, *argv, root="/tmp/plan_root"):
    code, out, _ = run_cli(capsys, "plan", f"--root={root}", *argv)
    assert code == 0
    last = out.strip().splitlines()[-1]  # "NAME: R runs, P paper cells, C cells with runs"
    words = last.split()
    return int(words[1]), int(words[3]), out


# ------------------------------------------------------------ plan: counts by hand

@pytest.mark.parametrize("table, runs, paper_cells", [
    # 5 models x 3 augmentations = 15 rows; x {C10, C100} x {SAM, SGD}; 5 seeds.
    ("table1_cifar", 15 * 2 * 2 * 5, 15 * 2 * 2),
    # 3 ResNets x 3 epoch budgets x {SAM, SGD} runs; each gives top-1 and top-5.
    ("table2_imagenet", 3 * 3 * 2, 3 * 3 * 2 * 2),
    # 9 data sets x {B7, L2} x {SAM, SGD}.
    ("table3_finetuning", 9 * 2 * 2, 9 * 2 * 2),
    # 4 noise rates x {SGD, SAM} runs; 5 methods x 4 rates in the paper.
    ("table4_label_noise", 4 * 2, 5 * 4),
    # {WRN, Shake-Shake} x {Basic, AA} x {SVHN, F-MNIST} x {SAM, SGD}.
    ("table5_svhn_fmnist", 2 * 2 * 2 * 2, 2 * 2 * 2 * 2),
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
    assert plan_summary(capsys, "--table=table1_cifar", "--seeds=2")[0] == 120
    # WRN-28-10 at 200 epochs: 3 augmentations x 4 columns x 5 seeds.
    assert plan_summary(capsys, "--table=table1_cifar", "--rows=wrn200_*")[:2] == (60, 12)
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


def test_paper_numbers_spot_checks():
    from sam_jax.reproduce import load_table
    cases = [  # (table, row, column, number in PAPER.md)
        ("table1_cifar", "wrn200_basic", "c10_sam", 2.7),
        ("table1_cifar", "wrn1800_autoaugment", "c100_sgd", 16.1),
        ("table1_cifar", "pyramid_shakedrop_autoaugment", "c100_sgd", 10.6),
        ("table2_imagenet", "resnet101_400", "sgd_top5", 6.41),
        ("table2_imagenet", "resnet152_200", "sam_top1", 18.5),
        ("table3_finetuning", "imagenet2012", "l2_sgd", 11.8),
        ("table3_finetuning", "fgvc_aircraft", "b7_sam", 6.80),
        ("table4_label_noise", "bootstrap_mixup", "noise60", 87.6),
        ("table4_label_noise", "sam", "noise80", 77.9),
        ("table5_svhn_fmnist", "shake_shake_autoaugment", "svhn_sgd", 1.03),
        ("figure3_hessian", "epoch300", "sgd_ratio", 11.4),
        ("figure3_hessian", "epoch1", "sam_lmax", 18.6),
    ]
    for table, row, column, number in cases:
        assert load_table(table).cell(row, column).paper == number, (table, row, column)
    table4 = load_table("table4_label_noise")
    assert table4.cell("mixup", "noise20").runs == ()  # paper only
    assert table4.cell("sam", "noise20").metric == "accuracy"


def test_run_names_are_unique_across_tables():
    from sam_jax.reproduce import TABLES, load_table
    names = {}
    for table in TABLES:
        for run in load_table(table).runs():
            assert names.setdefault(run.name, run) == run, run.name


def test_run_configs_accept_their_arg_and_overrides():
    """Every run's ARG and override keys exist in its config file (files that
    are not written yet are skipped)."""
    import importlib.util
    from sam_jax.reproduce import TABLES, load_table
    runs = {run.name: run for table in TABLES for run in load_table(table).runs()}
    runs.update({run.name: run for run in
                 cli.reproduce.load_sweep("experiments/sweeps/rho_search.py").runs()})
    modules = {}
    for run in runs.values():
        path, _, arg = run.config.partition(":")
        if not os.path.exists(os.path.join(REPO, path)):
            continue
        if path not in modules:
            spec = importlib.util.spec_from_file_location("config", os.path.join(REPO, path))
            modules[path] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(modules[path])
        config = modules[path].get_config(arg)
        for key in [k for k, _ in run.overrides] + list(run.seed_keys):
            *parents, leaf = key.split(".")
            node = config
            for parent in parents:
                node = node[parent]
            assert leaf in node, (run.config, key)
    assert "configs/quickstart.py" in modules and "configs/cifar_wrn.py" in modules


@pytest.mark.parametrize("argv, message", [
    (["plan", "--table=table9", "--root=/tmp/x"], "unknown table 'table9'"),
    (["plan", "--table=table1_cifar", "--rows=nope", "--root=/tmp/x"],
     "unknown row 'nope'"),
    (["launch", "--table=table1_cifar", "--launcher=k8s", "--root=/tmp/x"],
     "unknown launcher 'k8s'"),
    (["collect", "--table=table1_cifar", "--root=/tmp/x", "--format=xml"],
     "unknown format 'xml'"),
    (["plan", "--table=table1_cifar"], "--root"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_code_2(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


# ------------------------------------------------------------ sweeps

def test_sweep_product_and_zip():
    assert sweeps.product({"a": [1, 2]}, {"b": ["x", "y"]}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert sweeps.zip({"a": [1, 2], "b": [3, 4]}) == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
    assert sweeps.product(sweeps.zip({"a": [1, 2], "b": [3, 4]}), {"c": [0]}) == [
        {"a": 1, "b": 3, "c": 0}, {"a": 2, "b": 4, "c": 0}]
    with pytest.raises(ValueError):
        sweeps.zip({"a": [1, 2], "b": [3]})


# ------------------------------------------------------------ SLURM

def slurm_files(runs, root, **options):
    options = launchers.SlurmOptions(**options)
    script = launchers.slurm_script("sam-test", len(runs), f"{root}/cmds.tsv", REPO,
                                    f"{root}/logs", options)
    return script, launchers.slurm_commands(runs, root, options)


def test_slurm_script_is_valid_bash_with_one_array_task_per_run(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "launch", "--table=table4_label_noise",
                           "--launcher=slurm", "--dry_run", f"--root={tmp_path}",
                           "--partition=gpu", "--nodes=2", "--gpus_per_node=4",
                           "--time=12:00:00", "--sbatch=--account=abc")
    assert code == 0 and not os.path.exists(tmp_path / "slurm")  # nothing written
    commands_header = f"# {tmp_path}/slurm/table4_label_noise.commands.tsv"
    script = out[out.index("#!/bin/bash"):out.index(commands_header)]
    (tmp_path / "job.sbatch").write_text(script)
    assert subprocess.run(["bash", "-n", str(tmp_path / "job.sbatch")]).returncode == 0
    for line in ["#SBATCH --array=0-7", "#SBATCH --partition=gpu", "#SBATCH --nodes=2",
                 "#SBATCH --gpus-per-node=4", "#SBATCH --time=12:00:00",
                 "#SBATCH --requeue", "#SBATCH --account=abc",
                 'srun "${TRAIN_ARGS[@]}" &', "trap forward_term TERM",
                 'scontrol requeue "$TASK"']:
        assert line in script, line
    commands = [line for line in out.splitlines() if line.startswith(f"{tmp_path}/")]
    assert len(commands) == 8  # 4 noise rates x {SGD, SAM}
    workdir, train, after = commands[0].split("\t")
    assert train == (f"python -m sam_jax.main --config=configs/label_noise.py:"
                     f"noise20,sgd --workdir={workdir} --config.seed=0 "
                     "--config.label_noise_seed=0 --distributed=yes")
    assert after == ""
    assert "# not submitted (--dry_run); would run: sbatch " in out


def test_slurm_single_process_runs_have_no_distributed_flag(tmp_path):
    runs = list(registry.seeded_runs("configs/hessian.py:sam", seeds=2,
                                     analyses=("hessian",)))
    script, commands = slurm_files(runs, str(tmp_path), max_parallel=1)
    assert "#SBATCH --array=0-1%1" in script
    workdir, train, after = commands.splitlines()[1].split("\t")
    assert "--distributed" not in train and train.endswith("--config.seed=1")
    assert after == f"python -m sam_jax.analyze --workdir={workdir} --what=hessian"


def run_slurm_task(tmp_path, train, signal_after=None, job_state="RUNNING"):
    """Runs the generated script as array task 0 with stub srun, scontrol and
    scancel (which, as SLURM does, signals the job step: here the run)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text(f'#!/bin/bash\necho $$ > {tmp_path}/step.pid\nexec "$@"\n')
    # `show job 77_0` prints the task's state, `show job` of anything else (the
    # array) every task's; the rest is recorded.
    (bin_dir / "scontrol").write_text(
        '#!/bin/bash\nif [[ $1 == show ]]; then\n'
        '  [[ $3 == 77_0 ]] && echo "JobState=$FAKE_JOB_STATE" || printf "JobState=%s\\n" RUNNING PENDING\n'
        '  exit 0\nfi\n'
        f'echo "$@" >> {tmp_path}/scontrol\n')
    (bin_dir / "scancel").write_text(f'#!/bin/bash\necho "$@" >> {tmp_path}/scancel\n'
                                     f'kill -s "${{1#--signal=}}" $(cat {tmp_path}/step.pid)\n')
    for stub in ("srun", "scontrol", "scancel"):
        os.chmod(bin_dir / stub, 0o755)
    run = registry.make_run("configs/quickstart.py:sam")
    script, _ = slurm_files([run], str(tmp_path), signal_seconds=60)
    workdir = tmp_path / "w"
    (tmp_path / "cmds.tsv").write_text(f"{workdir}\t{train}\t\n")
    (tmp_path / "job.sbatch").write_text(script)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
               SLURM_ARRAY_JOB_ID="77", SLURM_ARRAY_TASK_ID="0", SLURM_JOB_ID="78",
               FAKE_JOB_STATE=job_state)
    process = subprocess.Popen(["bash", str(tmp_path / "job.sbatch")], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if signal_after:
        time.sleep(signal_after)
        process.terminate()  # SIGTERM to the batch shell, as --signal=B:TERM does
    process.communicate(timeout=30)
    status = json.loads((workdir / "status.json").read_text())
    requeued = (tmp_path / "scontrol").read_text() if (tmp_path / "scontrol").exists() else ""
    return process.returncode, status, requeued


def test_slurm_task_records_failure_and_requeues_on_exit_75(tmp_path):
    code, status, requeued = run_slurm_task(tmp_path, "bash -c 'exit 3'")
    assert (code, status["state"], status["exit_code"], requeued) == (3, "failed", 3, "")
    code, status, requeued = run_slurm_task(tmp_path, "bash -c 'exit 75'")
    assert (code, status["state"], requeued) == (75, "preempted", "requeue 77_0\n")


def test_slurm_task_that_slurm_is_ending_is_not_requeued_again(tmp_path):
    # scancel (and scontrol requeue) send SIGTERM while the job is COMPLETING:
    # the run saves and exits 75; a cancelled task must stay cancelled.
    code, status, requeued = run_slurm_task(tmp_path, "bash -c 'exit 75'",
                                            job_state="COMPLETING")
    assert (code, status["state"], requeued) == (75, "preempted", "")


def test_slurm_task_forwards_sigterm_to_the_run(tmp_path):
    # A stand-in for the trainer: on SIGTERM it "saves" and exits 75.
    train = "bash -c 'trap \"exit 75\" TERM; for i in $(seq 100); do sleep 0.1; done'"
    code, status, requeued = run_slurm_task(tmp_path, train, signal_after=1.0)
    assert (code, status["state"], requeued) == (75, "preempted", "requeue 77_0\n")
    # Through SLURM to this task's job step, not to srun (which would SIGKILL
    # the run), nor to job 78 (an array's id: all its tasks).
    assert (tmp_path / "scancel").read_text() == "--signal=TERM 77_0\n"


# ------------------------------------------------------------ TPU

def test_tpu_command():
    run = registry.make_run("configs/imagenet_resnet.py:resnet50,100,sam", seed=0)
    (line,) = launchers.tpu_command(run, "gs://b/t2", "my-pod", "us-central2-b",
                                    "~/sam_jax")
    assert line == (
        'gcloud compute tpus tpu-vm ssh my-pod --zone=us-central2-b --worker=all '
        '--command="cd ~/sam_jax && python3 -m sam_jax.main '
        '--config=configs/imagenet_resnet.py:resnet50,100,sam '
        '--workdir=gs://b/t2/imagenet_resnet_resnet50_100_sam_seed0 --config.seed=0 '
        '--distributed=yes"')
    hessian = registry.make_run("configs/hessian.py:sgd", analyses=("hessian",))
    lines = launchers.tpu_command(hessian, "/r", "p", "z", "/repo")
    assert lines[1] == ('gcloud compute tpus tpu-vm ssh p --zone=z --worker=0 '
                        '--command="cd /repo && JAX_PLATFORMS=cpu python3 -m sam_jax.analyze '
                        '--workdir=/r/hessian_sgd_seed0 --what=hessian"')


# ------------------------------------------------------------ collect

FAKE_TABLE = """
from experiments import registry


def get_table(seeds=None):
    def runs(method, rho):
        return registry.seeded_runs(f"configs/quickstart.py:{method}",
                                    {"sam.rho": rho}, seeds or 3)
    return registry.Table(
        "fake", "Fake", (("r0", "row 0"), ("r1", "row 1")),
        (("sam", "SAM"), ("sgd", "SGD")),
        (registry.Cell("r0", "sam", 2.0, runs("sam", 0.1)),
         registry.Cell("r0", "sgd", 3.0, runs("sgd", 0.0)),
         registry.Cell("r1", "sam", 4.0, runs("sam", 0.2)),
         registry.Cell("r1", "sgd", None, ())))
"""


def fake_table_file(tmp_path):
    path = tmp_path / "fake_table.py"
    path.write_text(FAKE_TABLE)
    return str(path)


def write(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(content if isinstance(content, str) else json.dumps(content))


def test_collect_handles_done_failed_running_unfinished_and_missing(tmp_path, capsys):
    from sam_jax.reproduce import load_table
    table_file = fake_table_file(tmp_path)
    table, root = load_table(table_file), str(tmp_path)
    sam_r0 = table.cell("r0", "sam").runs
    for run, error in zip(sam_r0, [0.02, 0.03, 0.04]):  # 3 done: 3.00 +- 1.00
        write(f"{run.workdir(root)}/results.json", {"test_error": error, "steps": 10})
    sgd_r0 = table.cell("r0", "sgd").runs
    write(f"{sgd_r0[0].workdir(root)}/results.json", {"test_error": 0.05})
    write(f"{sgd_r0[1].workdir(root)}/status.json", {"state": "failed", "exit_code": 3})
    write(f"{sgd_r0[2].workdir(root)}/metrics.jsonl", "{}\n")  # active now: running
    stale = table.cell("r1", "sam").runs[0].workdir(root)
    write(f"{stale}/metrics.jsonl", "{}\n")
    write(f"{stale}/status.json", {"state": "preempted", "exit_code": 75})
    for name in ("metrics.jsonl", "status.json"):
        os.utime(f"{stale}/{name}", (time.time() - 3600,) * 2)

    cells, statuses = collect.collect_table(table, root)
    by_name = {s.name: s.status for s in statuses.values()}
    assert [by_name[r.name] for r in sgd_r0] == ["done", "failed", "running"]
    assert [by_name[r.name] for r in table.cell("r1", "sam").runs] == [
        "unfinished", "missing", "missing"]
    assert cells[0].mean == pytest.approx(3.0) and cells[0].std == pytest.approx(1.0)

    code, out, _ = run_cli(capsys, "collect", "--table=" + table_file,
                           f"--root={root}", f"--plot={tmp_path}/fig.png")
    assert code == 0
    assert "| row 0 | 2.0 | 3.00 +- 1.00 (n=3) | 3.0 | 5.00 (n=1) [2 pending] |" in out
    assert "| row 1 | 4.0 | (unfinished 1, missing 2) |  |  |" in out
    assert "Runs: 9 (done 4, running 1, unfinished 1, failed 1, missing 2)" in out
    assert f"| {sgd_r0[1].name} | failed | exit code 3 (non-finite loss or gradient) |" in out
    assert "preempted; idle 60 min; launch again to resume" in out
    assert os.path.getsize(tmp_path / "fig.png") > 0

    code, summary, _ = run_cli(capsys, "collect", "--table=" + table_file,
                               f"--root={root}", "--format=summary")
    assert code == 0 and summary == out[:out.index("\n\n| run | status |")] + "\n"

    code, out, _ = run_cli(capsys, "collect", "--table=" + table_file,
                           f"--root={root}", "--format=csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 4
    assert (rows[0]["paper"], rows[0]["mean"], rows[0]["std"], rows[0]["n"]) == (
        "2.0", "3.0000", "1.0000", "3")
    assert rows[3]["runs"] == "0" and rows[3]["mean"] == ""


def test_collect_reads_hessian_from_analysis_json(tmp_path):
    from sam_jax.reproduce import load_table
    table, root = load_table("figure3_hessian"), str(tmp_path)
    sgd, sam = table.cell("epoch1", "sgd_lmax").runs[0], table.cell("epoch1", "sam_lmax").runs[0]
    for run in (sgd, sam):
        write(f"{run.workdir(root)}/results.json",
              {"test_error": 0.05, "steps": 600, "epochs": 300})
    # sam_jax.analyze's record of the latest checkpoint (epoch 300).
    write(f"{sgd.workdir(root)}/analysis.json", {"hessian": {
        "step": 600, "top_eigenvalues": [20.0, 8.0, 6.0, 4.0, 2.0],
        "lambda_max": 20.0, "lambda_max_over_lambda_5": 10.0}})
    cells, statuses = collect.collect_table(table, root)
    values = {(c.cell.row, c.cell.column): c.mean for c in cells}
    assert values[("epoch300", "sgd_lmax")] == 20.0
    assert values[("epoch300", "sgd_ratio")] == 10.0
    assert values[("epoch1", "sgd_lmax")] is None  # not analysed at epoch 1
    assert values[("epoch300", "sam_lmax")] is None
    assert statuses[sam.name].detail.endswith("no hessian in analysis.json")


def test_collect_reads_sharpness_logged_during_training(tmp_path):
    from sam_jax.reproduce import load_table
    table, root = load_table("figure3_hessian"), str(tmp_path)
    sgd = table.cell("epoch1", "sgd_lmax").runs[0]
    # What config.sharpness writes after epochs 1 and 50, and a line cut short
    # by an attempt that was killed (the record is lost, the others stand).
    lines = [{"step": 10, "split": "train", "loss": 2.0},
             {"step": 195, "split": "sharpness", "epoch": 1, "lambda_max": 60.0,
              "lambda_5": 30.0, "lambda_max_over_lambda_5": 2.0, "m_sharpness": 0.1},
             {"step": 9750, "split": "sharpness", "epoch": 50, "lambda_max": 12.0,
              "lambda_5": 8.0, "lambda_max_over_lambda_5": 1.5, "m_sharpness": 0.05}]
    write(f"{sgd.workdir(root)}/metrics.jsonl",
          "".join(json.dumps(line) + "\n" for line in lines) + '{"step": 19500, "spl')
    write(f"{sgd.workdir(root)}/results.json", {"test_error": 0.05})
    cells, _ = collect.collect_table(table, root)
    values = {(c.cell.row, c.cell.column): c.mean for c in cells}
    assert values[("epoch1", "sgd_lmax")] == 60.0
    assert values[("epoch1", "sgd_ratio")] == 2.0
    assert values[("epoch50", "sgd_ratio")] == 1.5
    assert values[("epoch300", "sgd_lmax")] is None
    m_sharpness = registry.sharpness_metric(50, "m_sharpness")
    assert m_sharpness(collect.read_outputs(sgd.workdir(root))) == 0.05
    with pytest.raises(ValueError, match="unknown sharpness quantity 'lambda_min'"):
        registry.sharpness_metric(1, "lambda_min")


def test_plot_sharpness_script_averages_runs(tmp_path):
    for seed, scale in enumerate((1.0, 3.0)):
        records = [{"step": 20 * e, "split": "sharpness", "epoch": e,
                    "lambda_max": scale * e, "lambda_max_over_lambda_5": 2.0,
                    "m_sharpness": 0.01 * e} for e in (1, 3)]
        write(str(tmp_path / f"run_sam_seed{seed}" / "metrics.jsonl"),
              "".join(json.dumps(r) + "\n" for r in records))
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    try:
        import plot_sharpness
    finally:
        sys.path.pop(0)
    epochs, mean, std = plot_sharpness.curves(
        sorted(str(p) for p in tmp_path.glob("run_sam_seed*")))["lambda_max"]
    assert list(epochs) == [1, 3] and list(mean) == [2.0, 6.0] and list(std) == [1.0, 3.0]
    out = tmp_path / "sharpness.png"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "plot_sharpness.py"),
         f"--out={out}", f"SAM:{tmp_path}/run_sam_seed*", f"SGD:{tmp_path}/nothing*"],
        capture_output=True, text=True)
    assert proc.returncode == 2 and "group 'SGD': no workdir matches" in proc.stderr
    assert not out.exists()
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "plot_sharpness.py"),
         f"--out={out}", f"SAM:{tmp_path}/run_sam_seed*"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------ local launcher

FAKE_PYTHON = """#!/bin/bash
# Stand-in for python: exit code from the workdir's name; writes results on 0.
for arg in "$@"; do case $arg in --workdir=*) workdir=${arg#--workdir=};; esac; done
case $workdir in
  *fail*) echo "error: bad"; exit 3;;
  *preempt*) mkdir -p "$workdir/checkpoints"; exit 75;;
esac
echo '{"test_error": 0.1}' > "$workdir/results.json"
"""


def test_local_launcher_records_failures_and_continues(tmp_path):
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    os.chmod(python, 0o755)
    runs = [registry.make_run("configs/quickstart.py:sam", {"tag": tag})
            for tag in ("fail", "preempt", "ok")]
    root, lines = str(tmp_path / "root"), []
    outcomes = launchers.launch_local(runs, root, REPO, python=str(python),
                                      echo=lines.append)
    assert list(outcomes.values()) == ["failed", "preempted", "done"]
    failed = json.loads(open(f"{runs[0].workdir(root)}/status.json").read())
    assert (failed["state"], failed["exit_code"]) == ("failed", 3)
    assert "error: bad" in open(f"{runs[0].workdir(root)}/launch.log").read()
    statuses = {s.name: s.status for s in collect.collect_table(
        registry.Table("t", "t", (("r", "r"),), (("c", "c"),),
                       (registry.Cell("r", "c", None, tuple(runs)),)),
        root, running_window_s=0)[1].values()}
    assert list(statuses.values()) == ["failed", "unfinished", "done"]
    outcomes = launchers.launch_local(runs, root, REPO, python=str(python),
                                      echo=lines.append)
    assert outcomes[runs[2].name] == "skipped"  # finished: not run again


# ------------------------------------------------------------ a real tiny run

TINY_TABLE = """
from experiments import registry

def get_table(seeds=None):
    runs = registry.seeded_runs("configs/quickstart.py:sam,clean", {
        "model.name": "wrn10_1", "num_epochs": 1, "batch_size": 64,
        "checkpoint_every_steps": 1000}, seeds or 1)
    return registry.Table("tiny", "Tiny digits", (("only", "the only row"),),
                          (("sam", "SAM"),), (registry.Cell("only", "sam", None, runs),))
"""


def test_tiny_table_launches_locally_end_to_end(tmp_path):
    """Real training (8 virtual devices, inherited XLA_FLAGS), collect, relaunch."""
    (tmp_path / "tiny.py").write_text(TINY_TABLE)
    common = [f"--table={tmp_path}/tiny.py", f"--root={tmp_path}/root"]

    def reproduce_cli(*argv):
        return subprocess.run([sys.executable, "-m", "sam_jax.reproduce", *argv, *common],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)

    launched = reproduce_cli("launch", "--launcher=local")
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert "8 devices" in launched.stdout and "tiny: done 1" in launched.stdout
    collected = reproduce_cli("collect")
    assert collected.returncode == 0, collected.stderr
    row = next(line for line in collected.stdout.splitlines()
               if line.startswith("| the only row"))
    assert row.endswith("(n=1) |")
    assert "| done | error " in collected.stdout
    again = reproduce_cli("launch", "--launcher=local")
    assert again.returncode == 0 and "finished, skipped" in again.stdout
    assert "tiny: skipped 1" in again.stdout


def test_sharpness_logged_during_training_wins_over_a_later_analysis(tmp_path):
    # Both describe epoch 300; the log's subset is the one of epochs 1 and 50.
    outputs = {"results": {"steps": 600, "epochs": 300},
               "sharpness": [{"step": 600, "split": "sharpness", "epoch": 300,
                              "lambda_max": 5.0, "lambda_max_over_lambda_5": 2.0}],
               "analysis": {"hessian": {"step": 600, "lambda_max": 7.0,
                                        "lambda_max_over_lambda_5": 3.0}}}
    assert registry.sharpness_metric(300, "lambda_max")(outputs) == 5.0
    del outputs["sharpness"]
    assert registry.sharpness_metric(300, "lambda_max")(outputs) == 7.0
