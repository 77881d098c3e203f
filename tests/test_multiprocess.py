"""Two trainer processes, as `srun` starts them for a SLURM task with 2 processes.

No SLURM here: each process gets the variables srun sets (SLURM_JOB_ID,
SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID), from which
jax.distributed.initialize() finds the coordinator and its rank, as on a
cluster. CPU collectives between the processes go through gloo. The same run
under a real SLURM, preempted and resumed: scripts/slurm_localhost.sh.
"""

import json
import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# JAX's SLURM cluster puts the coordinator on port 61440 + job id % 4096.
PORT_BASE = 61440


def free_job_id() -> int:
    """A job id whose coordinator port is free here now."""
    for job_id in range(1000, 1000 + 4096):
        with socket.socket() as s:
            try:
                s.bind(("localhost", PORT_BASE + job_id % 4096))
                return job_id
            except OSError:
                continue
    raise RuntimeError("no free coordinator port")


def test_two_processes_train_checkpoint_and_finish(tmp_path):
    workdir = tmp_path / "run"
    argv = [sys.executable, "-m", "sam_jax.main", "--config=configs/quickstart.py:sam",
            f"--workdir={workdir}", "--config.model.name=wrn10_1", "--config.batch_size=32",
            "--config.num_steps=20", "--config.log_every_steps=10",
            "--config.checkpoint_every_steps=10", "--config.eval_every_epochs=1",
            "--distributed=yes"]
    job_id = free_job_id()
    processes = []
    for rank in range(2):
        env = dict(os.environ, SLURM_JOB_ID=str(job_id), SLURM_STEP_NODELIST="localhost",
                   SLURM_NTASKS="2", SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank),
                   JAX_PLATFORMS="cpu",
                   # One device each, as srun's CPU tasks get here: with one local
                   # device, device_put of a jax.Array across processes broke saving.
                   XLA_FLAGS="--xla_force_host_platform_device_count=1")
        processes.append(subprocess.Popen(argv, cwd=REPO, env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    # 2 processes x 1 device; only process 0 prints.
    assert "starting step 0/20 (0.5 epochs of 40 steps, 2 devices" in outputs[0]
    assert "starting step" not in outputs[1]
    results = json.loads((workdir / "results.json").read_text())
    assert results["steps"] == 20
    # Checkpoints at 10 and 20 were written by both processes together.
    assert sorted(os.listdir(workdir / "checkpoints")) == ["10", "20"]
