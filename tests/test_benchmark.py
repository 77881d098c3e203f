"""Smoke test of scripts/benchmark.py: --quick runs every case and reports a ratio."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from helpers import REPO

SCRIPT = os.path.join(REPO, "scripts", "benchmark.py")
CASES = ("sam_vs_sgd", "sam_vs_optax", "sam_vs_torch", "input_pipeline", "memory",
         "compile_time", "m_sharpness", "conv_weight_grad", "device_sums")


def user_environment() -> dict:
    """The benchmark times what a user runs: the machine's real CPU device,
    not conftest's 8 virtual ones."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(
        flag for flag in env.get("XLA_FLAGS", "").split()
        if not flag.startswith("--xla_force_host_platform_device_count"))
    return env


def test_quick_benchmark_reports_every_case(tmp_path):
    """The default cases, and the methods case (one process: one start-up and
    one compile of the SAM and SGD steps they share)."""
    json_out = tmp_path / "results.json"
    md_out = tmp_path / "results.md"
    subprocess.run([sys.executable, SCRIPT, "--quick", "--repeats=1",
                    f"--cases={','.join(CASES)},methods",
                    "--methods=sam,looksam,entropy_sgd",
                    f"--json_out={json_out}", f"--md_out={md_out}",
                    f"--methods_md_out={tmp_path / 'methods.md'}"],
                   check=True, env=user_environment(), cwd=REPO, timeout=900)
    report = json.loads(json_out.read_text())

    assert set(CASES) | {"methods"} == set(report["settings"]["cases"])
    rows = [row for row in report["cases"] if row["case"] != "methods"]
    assert {row["case"] for row in rows} == set(CASES)
    torch_present = importlib.util.find_spec("torch") is not None
    for row in rows:
        if row["case"] == "sam_vs_torch" and not torch_present:
            assert row["ratio"] is None and "torch" in row["skipped"]
            continue
        assert isinstance(row["ratio"], float) and row["denominator"] > 0, row
        if " - " not in row["measure"]:  # a difference (memory, time) may be <= 0
            assert row["ratio"] > 0, row
        assert (row["target"] is None) == (row["passed"] is None), row
    # sam_vs_sgd and memory cover two setups (a small and a large model).
    assert len([r for r in rows if r["case"] == "sam_vs_sgd"]) == 2
    assert len([r for r in rows if r["case"] == "memory"]) == 4  # + optax rows
    for by_name in report["timings"].values():
        for summary in by_name.values():
            assert len(summary["seconds"]) == 1 and summary["all_steps_finite"]
    assert report["versions"]["jax"] and report["machine"]["nproc"] >= 1
    text = md_out.read_text()
    assert "| case |" in text

    # The methods case: each method's declared cost beside its measured time,
    # with SGD (not asked for) timed as the denominator. The papers' costs with
    # the default sub-configs: SAM two passes, LookSAM's full step every k = 5
    # steps, Entropy-SGD's L = 5 Langevin gradients.
    methods = {row["method"]: row for row in report["cases"] if row["case"] == "methods"}
    assert {name: row["gradient_evaluations"] for name, row in methods.items()} == {
        "sam": "2", "looksam": "1 + 1/5", "entropy_sgd": "5"}
    assert all(row["ratio"] > 0 for row in methods.values())
    assert "## Per-method step cost" in text and "Foret et al., ICLR 2021" in text
    # The per-method table alone (the README includes it): one row a method.
    alone = (tmp_path / "methods.md").read_text()
    assert alone.startswith("Step time of each method over SGD's")
    assert [line.split(" | ")[0].strip("| ") for line in alone.splitlines()
            if line.startswith("| ") and not line.startswith("| method")] == [
        "sam", "looksam", "entropy_sgd"]


@pytest.mark.slow  # issue 18's cases; the default cases' smoke test above runs the harness
def test_quick_bf16_utilization_and_accumulation_cases(tmp_path):
    """The non-default cases of issue 18, with every step in bf16 (so the bf16
    case builds the float32 steps beside them)."""
    json_out = tmp_path / "results.json"
    subprocess.run([sys.executable, SCRIPT, "--quick", "--repeats=1", "--warmup=0",
                    "--cases=bf16,utilization,grad_accum", "--dtype=bfloat16",
                    "--peak_flops=1e12", f"--json_out={json_out}"],
                   check=True, env=user_environment(), cwd=REPO, timeout=900)
    report = json.loads(json_out.read_text())
    assert report["settings"]["dtype"] == "bfloat16"
    rows = {}
    for row in report["cases"]:
        rows.setdefault(row["case"], []).append(row)
        assert isinstance(row["ratio"], float) and row["ratio"] > 0, row
        assert row["target"] is None and row["passed"] is None
    assert [r["measure"] for r in rows["bf16"]] == [
        "SAM step s, bfloat16 / float32", "SAM peak bytes, bfloat16 / float32",
        "SAM step s / SGD step s, float32", "SAM step s / SGD step s, bfloat16"]
    bf16_memory = rows["bf16"][1]
    assert bf16_memory["numerator"] == bf16_memory["bfloat16"]["peak"] > 0
    # FLOP/s = XLA's count of the step's FLOPs / its median time.
    for row, dtype in zip(rows["utilization"], ("float32", "bfloat16")):
        assert dtype in row["measure"] and row["denominator"] == 1e12
        assert row["step_flops"] > 0
        assert row["numerator"] == pytest.approx(row["step_flops"] / row["median_s"])
    # Per-device batch 16 (one CPU device): m = 4 for every K.
    assert [r["measure"] for r in rows["grad_accum"]] == [
        "SAM peak bytes, grad_accum_steps 2 / 1 (m = 4)",
        "SAM step s, grad_accum_steps 2 / 1 (m = 4)",
        "SAM peak bytes, grad_accum_steps 4 / 1 (m = 4)",
        "SAM step s, grad_accum_steps 4 / 1 (m = 4)"]
    timed = report["timings"]["wrn10_1 batch 16"]
    assert {"sam", "sgd", "sam_float32", "sgd_float32", "sam_accum1", "sam_accum2",
            "sam_accum4"} == set(timed)
    assert all(summary["all_steps_finite"] for summary in timed.values())


@pytest.mark.parametrize("args,message", [
    (["--main=resnet9:16"], "unknown model 'resnet9'; allowed:"),
    (["--large=wrn10_1:0"], "must be a positive multiple of the device count"),
    (["--main=wrn10_1:12", "--cases=m_sharpness"], "must be a multiple of 8"),
    (["--main=resnet8:16", "--cases=sam_vs_torch"], "sam_vs_torch needs a WideResNet"),
    (["--main=wrn10_1:6", "--cases=grad_accum"], "must be a multiple of 4"),
    (["--peak_flops=0"], "--peak_flops=0.0 must be > 0"),
])
def test_bad_setup_exits_2_with_one_line_before_any_work(tmp_path, args, message):
    json_out = tmp_path / "results.json"
    result = subprocess.run([sys.executable, SCRIPT, "--quick", f"--json_out={json_out}",
                             *args], capture_output=True, text=True,
                            env=user_environment(), cwd=REPO, timeout=120)
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert message in last_line and "Traceback" not in result.stderr
    assert not json_out.exists()


@pytest.mark.slow  # issue 28's cases: a dozen more compiles than the default set
def test_quick_cpu_vs_torch_profile_and_flags_cases(tmp_path):
    json_out = tmp_path / "results.json"
    subprocess.run([sys.executable, SCRIPT, "--quick", "--repeats=1",
                    "--cases=cpu_vs_torch,step_profile,cpu_flags",
                    f"--json_out={json_out}", f"--md_out={tmp_path / 'results.md'}"],
                   check=True, env=user_environment(), cwd=REPO, timeout=900)
    rows = json.loads(json_out.read_text())["cases"]
    torch_present = importlib.util.find_spec("torch") is not None
    # cpu_vs_torch: SGD, SAM at m = the batch and at a smaller m, per model.
    assert [row["measure"].split(":")[0] for row in rows
            if row["case"] == "cpu_vs_torch"] == ["SGD", "SAM m = 16", "SAM m = 8"]
    assert all((row["ratio"] or 0) > 0 or not torch_present
               for row in rows if row["case"] == "cpu_vs_torch")
    # step_profile: seven parts of the SAM step; the parts up to SAM's add up to it.
    profile = [row for row in rows if row["case"] == "step_profile"]
    assert len(profile) == 7 and profile[0]["ratio"] > 0
    assert sum(row["ratio"] for row in profile[:5]) == pytest.approx(1.0)
    # cpu_flags: each flag set against the defaults, with the weights' distance.
    flags = [row for row in rows if row["case"] == "cpu_flags"]
    assert len(flags) == 6 and all(row["ratio"] > 0 for row in flags)
    assert all(row["max_abs_weight_difference"] is not None for row in flags)
