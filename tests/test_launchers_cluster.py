"""The cluster launchers' command lines, against independent expectations.

TPU: `launch --launcher=tpu --execute` runs with a fake `gcloud` first on PATH
that records its arguments; they must be exactly what `gcloud compute tpus
tpu-vm ssh` needs for a pod (syntax from the gcloud reference: TPU name, then
--zone, --worker=all to run on every worker at once, --command). Each recorded
--command is then run by bash, as the worker's login shell would, with a fake
`python3` that records its directory and arguments. SLURM: the GPU request and
bad input. The generated sbatch script on a real SLURM: scripts/slurm_localhost.sh.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A run with a value a shell would mangle (space, $, quotes) and one with an analysis.
TABLE = """
from sam_jax.reproduce import registry


def get_table(seeds=None):
    plain = registry.make_run("configs/quickstart.py:sam",
                              {"sam.rho": 0.05, "note": "a $HOME 'b'"})
    hessian = registry.make_run("configs/hessian.py:sgd", analyses=("hessian",))
    return registry.Table(
        "pod", "Pod", (("r", "row"),), (("sam", "SAM"), ("sgd", "SGD")),
        (registry.Cell("r", "sam", None, (plain,)),
         registry.Cell("r", "sgd", None, (hessian,))))
"""

RECORDER = """#!{python}
import json, os, sys
with open({log!r}, "a") as f:
    f.write(json.dumps({{"cwd": os.getcwd(), "argv": sys.argv[1:],
                        "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS")}}) + "\\n")
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""

SSH = ["compute", "tpus", "tpu-vm", "ssh", "my-pod", "--zone=us-central2-b"]
PLAIN_TRAIN = ("python3 -m sam_jax.main --config=configs/quickstart.py:sam "
               "--workdir=/mnt/shared/runs/quickstart_sam_note=a--HOME--b-_sam.rho=0.05_seed0 "
               "--config.seed=0 '--config.note=a $HOME '\"'\"'b'\"'\"'' --config.sam.rho=0.05 "
               "--distributed=yes")
HESSIAN_TRAIN = ("python3 -m sam_jax.main --config=configs/hessian.py:sgd "
                 "--workdir=/mnt/shared/runs/hessian_sgd_seed0 --config.seed=0 "
                 "--distributed=yes")
HESSIAN_ANALYSIS = ("JAX_PLATFORMS=cpu python3 -m sam_jax.analysis "
                    "--workdir=/mnt/shared/runs/hessian_sgd_seed0 --what=hessian")
EXPECTED_GCLOUD = [
    SSH + ["--worker=all", "--command=cd ~/sam_jax && " + PLAIN_TRAIN],
    SSH + ["--worker=all", "--command=cd ~/sam_jax && " + HESSIAN_TRAIN],
    SSH + ["--worker=0", "--command=cd ~/sam_jax && " + HESSIAN_ANALYSIS],
]
# What python3 gets on the workers, in ~/sam_jax.
EXPECTED_WORKER = [
    ({"argv": ["-m", "sam_jax.main", "--config=configs/quickstart.py:sam",
               "--workdir=/mnt/shared/runs/quickstart_sam_note=a--HOME--b-_sam.rho=0.05_seed0",
               "--config.seed=0", "--config.note=a $HOME 'b'", "--config.sam.rho=0.05",
               "--distributed=yes"], "JAX_PLATFORMS": None}),
    ({"argv": ["-m", "sam_jax.main", "--config=configs/hessian.py:sgd",
               "--workdir=/mnt/shared/runs/hessian_sgd_seed0", "--config.seed=0",
               "--distributed=yes"], "JAX_PLATFORMS": None}),
    # One process cannot use a multi-host slice's TPUs alone: the CPU.
    ({"argv": ["-m", "sam_jax.analysis", "--workdir=/mnt/shared/runs/hessian_sgd_seed0",
               "--what=hessian"], "JAX_PLATFORMS": "cpu"}),
]


@pytest.fixture
def pod(tmp_path):
    """The table file, a fake gcloud on PATH, and where each records."""
    (tmp_path / "pod_table.py").write_text(TABLE)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(RECORDER.format(python=sys.executable, log=str(tmp_path / "gcloud.jsonl")))
    gcloud.chmod(0o755)
    return tmp_path


def launch_tpu(pod, *flags, fake_exit=0, root="/mnt/shared/runs"):
    env = dict(os.environ, PATH=f"{pod / 'bin'}:{os.environ['PATH']}",
               FAKE_EXIT=str(fake_exit))
    return subprocess.run(
        [sys.executable, "-m", "sam_jax.reproduce", "launch", "--launcher=tpu",
         f"--table={pod / 'pod_table.py'}", f"--root={root}", *flags],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_tpu_launch_runs_exactly_the_pod_commands(pod):
    result = launch_tpu(pod, "--tpu_name=my-pod", "--zone=us-central2-b", "--execute")
    assert result.returncode == 0, result.stderr
    calls = read_jsonl(pod / "gcloud.jsonl")
    assert [call["argv"] for call in calls] == EXPECTED_GCLOUD

    # Each --command as a worker's login shell runs it (ssh hands it to `sh -c`).
    home = pod / "home"
    (home / "sam_jax").mkdir(parents=True)
    worker_bin = pod / "worker_bin"
    worker_bin.mkdir()
    (worker_bin / "python3").write_text(
        RECORDER.format(python=sys.executable, log=str(pod / "worker.jsonl")))
    (worker_bin / "python3").chmod(0o755)
    worker_env = {"HOME": str(home), "PATH": f"{worker_bin}:/usr/bin:/bin"}
    for argv in EXPECTED_GCLOUD:
        command = argv[-1].removeprefix("--command=")
        subprocess.run(["bash", "-c", command], env=worker_env, check=True)
    worker_calls = read_jsonl(pod / "worker.jsonl")
    assert all(call.pop("cwd") == str(home / "sam_jax") for call in worker_calls)
    assert worker_calls == EXPECTED_WORKER


def test_tpu_printed_lines_pasted_into_bash_run_the_pod_commands(pod):
    result = launch_tpu(pod, "--tpu_name=my-pod", "--zone=us-central2-b")
    assert result.returncode == 0, result.stderr
    assert not (pod / "gcloud.jsonl").exists()  # printed, not run
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("gcloud ") for line in lines)
    env = dict(os.environ, PATH=f"{pod / 'bin'}:{os.environ['PATH']}")
    for line in lines:
        subprocess.run(["bash", "-c", line], env=env, check=True)
    assert [call["argv"] for call in read_jsonl(pod / "gcloud.jsonl")] == EXPECTED_GCLOUD


def test_tpu_failed_training_skips_its_analyses_and_exits_1(pod):
    result = launch_tpu(pod, "--tpu_name=my-pod", "--zone=us-central2-b", "--execute",
                        fake_exit=255)
    assert result.returncode == 1
    # Both trainings were tried; the hessian analysis of a failed run was not.
    assert [call["argv"] for call in read_jsonl(pod / "gcloud.jsonl")] == EXPECTED_GCLOUD[:2]
    assert result.stdout.count(": exit code 255") == 2


@pytest.mark.parametrize("flags, message", [
    (("--root=runs", "--tpu_name=p", "--zone=z"), "--root=runs: give an absolute path"),
    # The trainer writes with os and open(): a gs:// workdir would be a local "gs:".
    (("--root=gs://b/r", "--tpu_name=p", "--zone=z"), "--root=gs://b/r: give an absolute"),
    (("--root=/mnt/r", "--execute"), "--execute needs --tpu_name"),
    (("--root=/mnt/r", "--execute", "--tpu_name=p"), "--execute needs --tpu_name"),
])
def test_tpu_bad_input_is_one_line_and_exit_2(pod, flags, message):
    root = next(flag for flag in flags if flag.startswith("--root=")).removeprefix("--root=")
    flags = tuple(flag for flag in flags if not flag.startswith("--root="))
    result = launch_tpu(pod, *flags, root=root)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not (pod / "gcloud.jsonl").exists()


def slurm_dry_run(pod, *flags):
    return subprocess.run(
        [sys.executable, "-m", "sam_jax.reproduce", "launch", "--launcher=slurm", "--dry_run",
         f"--table={pod / 'pod_table.py'}", f"--root={pod / 'runs'}", *flags],
        cwd=REPO, capture_output=True, text=True, timeout=120)


def test_slurm_gpus_per_node_zero_asks_for_no_gpu(pod):
    result = slurm_dry_run(pod, "--gpus_per_node=0")
    assert result.returncode == 0, result.stderr
    sbatch = [line for line in result.stdout.splitlines() if line.startswith("#SBATCH")]
    assert sbatch == [
        "#SBATCH --job-name=sam-pod", "#SBATCH --array=0-1", "#SBATCH --time=24:00:00",
        "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --requeue",
        "#SBATCH --open-mode=append", "#SBATCH --signal=B:TERM@300",
        f"#SBATCH --output={pod / 'runs' / 'slurm'}/%x_%A_%a.out"]
    assert "#SBATCH --gpus-per-node=2" in slurm_dry_run(pod, "--gpus_per_node=2").stdout


@pytest.mark.parametrize("flag", ["--gpus_per_node=-1", "--cpus_per_task=0",
                                  "--max_parallel=0", "--nodes=0"])
def test_slurm_bad_counts_are_one_line_and_exit_2(pod, flag):
    result = slurm_dry_run(pod, flag)
    name, value = flag.split("=")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {name}={value} must be >= ")
    assert result.stderr.count("\n") == 1
