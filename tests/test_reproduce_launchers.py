"""Tests of sam_jax.reproduce.launchers: SLURM scripts run with stub srun and
scontrol, TPU commands, the local launcher, and a tiny table trained for real."""

import json
import os
import subprocess
import sys
import time

from helpers import REPO
from helpers import run_reproduce_cli
from sam_jax import reproduce
from sam_jax.reproduce import collect
from sam_jax.reproduce import launchers
from sam_jax.reproduce import registry


# ------------------------------------------------------------ SLURM


def slurm_files(runs, root, **options):
    options = launchers.SlurmOptions(**options)
    script = launchers.slurm_script("sam-test", len(runs), f"{root}/cmds.tsv", REPO,
                                    f"{root}/logs", options)
    return script, launchers.slurm_commands(runs, root, options)


def test_slurm_script_is_valid_bash_with_one_array_task_per_run(tmp_path, capsys):
    code, out, _ = run_reproduce_cli(capsys, "launch", "--table=table4_label_noise",
                           "--launcher=slurm", "--dry_run", f"--root={tmp_path}",
                           "--partition=gpu", "--nodes=2", "--gpus_per_node=4",
                           "--time=12:00:00", "--sbatch=--account=abc")
    assert code == 0 and not os.path.exists(tmp_path / "slurm")  # nothing written
    commands_header = f"# {tmp_path}/slurm/table4_label_noise.commands.tsv"
    script = out[out.index("#!/bin/bash"):out.index(commands_header)]
    (tmp_path / "job.sbatch").write_text(script)
    assert subprocess.run(["bash", "-n", str(tmp_path / "job.sbatch")]).returncode == 0
    for line in ["#SBATCH --array=0-11", "#SBATCH --partition=gpu", "#SBATCH --nodes=2",
                 "#SBATCH --gpus-per-node=4", "#SBATCH --time=12:00:00",
                 "#SBATCH --requeue", "#SBATCH --account=abc",
                 'srun "${TRAIN_ARGS[@]}" &', "trap forward_term TERM",
                 'scontrol requeue "$TASK"']:
        assert line in script, line
    commands = [line for line in out.splitlines() if line.startswith(f"{tmp_path}/")]
    assert len(commands) == 12  # 4 noise rates x {SGD, SGD 2x epochs, SAM}
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
    assert after == f"python -m sam_jax.analysis --workdir={workdir} --what=hessian"


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
                        '--command="cd /repo && JAX_PLATFORMS=cpu python3 -m '
                        'sam_jax.analysis --workdir=/r/hessian_sgd_seed0 --what=hessian"')


# ------------------------------------------------------------ local launcher


FAKE_PYTHON = """#!/bin/bash
# Stand-in for python: exit code from the workdir's name; writes results on 0.
for arg in "$@"; do case $arg in --workdir=*) workdir=${arg#--workdir=};; esac; done
echo "compilation cache: $JAX_COMPILATION_CACHE_DIR"
case $workdir in
  *fail*) echo "error: bad"; exit 3;;
  *preempt*) mkdir -p "$workdir/checkpoints"; exit 75;;
esac
echo '{"test_error": 0.1}' > "$workdir/results.json"
"""


def test_local_launcher_records_failures_and_continues(tmp_path, monkeypatch):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)  # conftest's
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
    # The runs share JAX's persistent compilation cache under the root.
    assert (f"compilation cache: {root}/.jax_compilation_cache" in
            open(f"{runs[2].workdir(root)}/launch.log").read())
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
from sam_jax.reproduce import registry

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


def test_local_shards_split_the_runs_between_launchers(tmp_path, capsys):
    """N launchers with --shard=I/N run every run once between them."""
    seen = []
    for shard in ("0/2", "1/2"):
        code, out, _ = run_reproduce_cli(capsys, "launch", "--table=table4_label_noise",
                                         "--launcher=local", "--dry_run",
                                         f"--root={tmp_path}", f"--shard={shard}")
        assert code == 0
        seen.append([line.split(": ")[0].split("] ")[1] for line in out.splitlines()
                     if line.endswith(": would run")])
    everything = [run.name for run in reproduce.load_table("table4_label_noise").runs()]
    assert len(seen[0]) == 6 and len(seen[1]) == 6
    assert seen[0] + seen[1] != everything and sorted(seen[0] + seen[1]) == sorted(everything)
    assert seen[0] == everything[0::2]
    for bad in ("2/2", "a/b", "1", "-1/2"):
        code, _, err = run_reproduce_cli(capsys, "launch", "--table=table4_label_noise",
                                         "--launcher=local", "--dry_run",
                                         f"--root={tmp_path}", f"--shard={bad}")
        assert code == 2 and f"--shard={bad!r}" in err


def test_the_local_launcher_records_each_run_and_skips_a_recorded_finished_one(
        tmp_path, monkeypatch):
    """Each run's line in run_outputs.jsonl is written when it ends; without
    the workdirs (a fresh checkout) the done run is skipped, the others rerun."""
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    os.chmod(python, 0o755)
    runs = [registry.make_run("configs/quickstart.py:sam", {"tag": tag})
            for tag in ("fail", "preempt", "ok")]
    root = str(tmp_path / "root")
    launchers.launch_local(runs, root, REPO, python=str(python), echo=lambda line: None)
    with open(f"{root}/run_outputs.jsonl") as f:
        lines = {line["name"]: line for line in map(json.loads, f)}
    assert sorted(lines) == sorted(run.name for run in runs)
    done = lines[runs[2].name]
    assert done["results"] == {"test_error": 0.1}
    assert sorted(done["status"]) == ["elapsed_s", "exit_code", "state"]
    assert (done["status"]["state"], done["status"]["exit_code"]) == ("done", 0)
    for run in runs:
        os.rename(run.workdir(root), f"{tmp_path}/moved_{run.seed}_{run.overrides[0][1]}")
    outcomes = launchers.launch_local(runs, root, REPO, python=str(python),
                                      echo=lambda line: None)
    assert list(outcomes.values()) == ["failed", "preempted", "skipped"]
