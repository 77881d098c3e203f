"""Two trainer processes of 2 devices each, as `srun` starts them for a SLURM
task with 2 processes, preempted midway and relaunched, against one process
of 4 devices: bitwise equal.

No SLURM here: each process gets the variables srun sets (SLURM_JOB_ID,
SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID), from which
jax.distributed.initialize() finds the coordinator and its rank, as on a
cluster; gloo carries the CPU collectives between the processes. The launching
and comparing are scripts/multiprocess_equality.py's, whose longer run adds
uninterrupted runs and 4 processes of 1 device. The same trainer under a real
SLURM, preempted and resumed: scripts/slurm_localhost.sh.

Why bitwise and not to a tolerance: every sum over devices is added in device
order (collectives.psum_in_device_order). With lax.psum, gloo (between processes)
and XLA:CPU's in-process all-reduce added the 4 gradients in different
orders, one bit apart, and training turned that bit into a difference of the
training loss of 6e-5 at step 6 and 2e-3 at step 11 (quickstart, WRN-16-2): a
ReLU input near 0 changes sign and the gradient jumps by percents. A tolerance loose enough for that would not tell it from a
real difference (another batch, another random draw).
"""

from helpers import load_module

NUM_STEPS = 30
ARGS = ["--config=configs/quickstart.py:sam", "--config.model.name=wrn10_1",
        "--config.batch_size=16", f"--config.num_steps={NUM_STEPS}",
        "--config.log_every_steps=5",
        # Periodic checkpoints at 25 and 30; the one at the preemption (10 or
        # 20: the processes agree on stopping every 10 steps) is its own.
        "--config.checkpoint_every_steps=25"]


def test_two_processes_of_two_devices_preempted_and_resumed_equal_one_process_of_four(
        tmp_path):
    script = load_module("scripts/multiprocess_equality.py")
    reference = tmp_path / "one_process"
    codes, outputs = script.finish(script.launch(reference, 1, 4, ARGS), timeout=600)
    assert codes == [0], outputs[0][-3000:]

    # SIGTERM to both processes once process 0 has logged step 5.
    workdir = tmp_path / "two_processes"
    records = [[tmp_path / f"writes_{run}_{rank}" for rank in range(2)] for run in range(2)]
    codes, outputs = script.preempt(script.launch(workdir, 2, 2, ARGS, records[0]),
                                    "step 5/", timeout=600)
    both = outputs[0][-3000:] + outputs[1][-3000:]
    assert codes == [75, 75], both
    # One checkpoint, saved by both together at the step they agreed on.
    steps = script.stopped_steps(outputs)
    assert steps in ([10, 10], [20, 20]), both
    assert script.saved_steps(workdir) == steps[:1]
    assert not (workdir / "results.json").exists()

    # The same command again: both resume there and finish.
    codes, outputs = script.finish(script.launch(workdir, 2, 2, ARGS, records[1]),
                                   timeout=600)
    assert codes == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert f"resuming at step {steps[0]}/{NUM_STEPS} (" in outputs[0]
    assert ", 4 devices," in outputs[0]
    assert not [line for line in outputs[1].splitlines()  # process 0 reports
                if line.startswith(("step ", "resuming", "final"))], outputs[1][-3000:]

    # Bitwise: every metric (steps/s and seconds aside), the results, and the
    # whole final state (weights, BatchNorm statistics, optimizer, counters).
    assert script.differences(workdir, reference) == []
    assert script.saved_steps(workdir) == [25, 30]
    # Only process 0 wrote config.json, metrics.jsonl, results.json (and the
    # TensorBoard events); process 1 wrote checkpoints and its lock.
    assert script.record_keeping_problems(records[0]) == []
    assert script.record_keeping_problems(records[1]) == []
    assert {"results.json", "config.json", "metrics.jsonl"} <= script.written(records[1])[0]
