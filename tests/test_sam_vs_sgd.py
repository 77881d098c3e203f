"""experiments/sam_vs_sgd: the pre-registered statistics against tabulated t
quantiles and a simulation, the pick and gate rules, and the analysis end to
end on fake run outputs."""

import json
import math
import os

import numpy as np
import pytest

from experiments import sam_vs_sgd as study
from experiments.sam_vs_sgd import analysis, budget, gates, grid, main, pick, power, stats

# Student's t quantiles from printed tables (5 degrees of freedom).
T_975_5, T_95_5 = 2.570582, 2.015048


def test_paired_interval_and_p_value_against_tabulated_quantiles():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=6)
    noise = (noise - noise.mean()) / noise.std(ddof=1) * 0.3  # sd exactly 0.3
    shift = T_975_5 * 0.3 / math.sqrt(6)  # t statistic exactly at the 5% edge
    sgd = {seed: 16.0 + seed for seed in range(1, 7)}
    sam = {seed: sgd[seed] + shift + noise[seed - 1] for seed in range(1, 7)}
    result = stats.paired(sam, sgd)
    assert result.n == 6 and result.mean == pytest.approx(shift)
    assert result.sd == pytest.approx(0.3)
    assert result.low == pytest.approx(0.0, abs=1e-6)  # 6-digit table
    assert result.high == pytest.approx(2 * shift)
    assert result.p == pytest.approx(0.05, rel=1e-4)
    upper, ok = stats.non_inferior(sam, sgd, margin=0.25)
    assert upper == pytest.approx(shift + T_95_5 * 0.3 / math.sqrt(6))
    assert ok == (upper < 0.25)
    # Only seeds both have pair; fewer than two: nothing.
    assert stats.paired({1: 1.0, 2: 2.0, 3: 0.0}, {2: 1.0, 3: 1.0}).n == 2
    assert stats.paired({1: 1.0}, {1: 2.0}) is None


def test_power_against_a_simulated_paired_t_test():
    rng = np.random.default_rng(1)
    n, effect, sd = 6, 0.5, 0.29
    d = rng.normal(effect, sd, size=(40000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    simulated = np.mean(np.abs(t) > T_975_5)
    assert stats.power(n, effect, sd) == pytest.approx(simulated, abs=0.01)
    n_needed = stats.seeds_needed(effect, sd)
    assert stats.power(n_needed, effect, sd) >= 0.8 > stats.power(n_needed - 1, effect, sd)
    assert stats.power(6, stats.detectable(sd, 6), sd) == pytest.approx(0.8, abs=1e-6)


def test_pick_ties_within_a_tenth_of_a_point_go_to_the_lowest_loss():
    assert pick.choose({0.01: (10.00, 0.30), 0.05: (10.08, 0.29), 0.1: (10.5, 0.1)}) == 0.05
    assert pick.choose({0.01: (10.00, 0.30), 0.05: (10.10, 0.20)}) == 0.01


def test_gates_need_both_interpolation_and_memorisation():
    clean = {"train_error": 0.009}
    assert gates.passed({"clean": clean, "noise80": {"train_corrupted_error": 0.09}})
    assert not gates.passed({"clean": clean, "noise80": {"train_corrupted_error": 0.11}})
    assert not gates.passed({"clean": {"train_error": 0.011},
                             "noise80": {"train_corrupted_error": 0.0}})
    assert not gates.passed({"clean": clean})


GATED = {"model": "wrn10_2", "epochs": 100}


def write_results(root, run, **results):
    workdir = run.workdir(str(root))
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f)


def test_picks_then_the_verdict_from_fake_runs(tmp_path, monkeypatch):
    for noise, _ in study.CONDITIONS:  # SGD's best rate is 0.05, SAM's best rho 0.1
        for method, (_, values) in grid.METHODS.items():
            for value in values:
                (run,) = grid.grid_runs(method, value, noise, GATED)
                best = 0.05 if method == "sgd" else 0.1
                write_results(tmp_path, run, validation_error=0.10 + abs(value - best),
                              validation_loss=0.3)
    picks = pick.picks_from(str(tmp_path), gated=GATED)
    assert {noise: {m: p["value"] for m, p in by.items()} for noise, by in picks.items()} \
        == {"clean": {"sgd": 0.05, "sam": 0.1}, "noise80": {"sgd": 0.05, "sam": 0.1}}
    chosen = {noise: {m: p["value"] for m, p in by.items()} for noise, by in picks.items()}
    # Clean: SAM one point below both baselines on every seed; 80% noise: SAM
    # equal to SGD up to +-0.5 noise; late-phase SAM equal to SAM.
    rng = np.random.default_rng(2)
    for noise, _ in study.CONDITIONS:
        for key, *_ in main.METHODS:
            for run in main.method_runs(key, noise, chosen, GATED):
                base = 20.0 + run.seed
                error = {"sgd": base, "sgd2x": base + 0.2,
                         "sam": base - (1.0 if noise == "clean" else rng.uniform(-.5, .5)),
                         "late_sam": base - (1.0 if noise == "clean" else 0.0),
                         "swa": base}[key]
                prefix = "swa_" if key == "swa" else ""
                write_results(tmp_path, run, **{
                    f"{prefix}test_error": error / 100, f"{prefix}train_error": 0.005,
                    f"{prefix}train_corrupted_error": 0.02, "gradient_evaluations": 1e4,
                    "train_seconds": 100.0})
    monkeypatch.setattr(pick, "read_picks", lambda: chosen)
    monkeypatch.setattr(gates, "read_gated", lambda: GATED)
    text, values = analysis.report(str(tmp_path))
    clean, noisy = text.split("### 80% noise")
    assert "**SAM beats SGD.**" in clean and "lower on 6/6 seeds" in clean
    assert "late-phase SAM" in clean and ": non-inferior" in clean  # equal to SAM
    assert "SWA over SGD" in clean and "not shown non-inferior" in clean  # 1 point worse
    assert "**no difference detected" in noisy and "these 19 seeds detect" in noisy
    assert set(values["clean"]["sam"]["error"]) == set(range(1, 7))
    analysis.plot(values, str(tmp_path / "verdict.png"))
    assert (tmp_path / "verdict.png").stat().st_size > 0


def test_budget_plans_add_each_runs_steps_times_its_step_time():
    """Each plan's core-hours by hand: runs x 7,800 steps x the step time; the
    grids' SGD run at 0.1 is the gate's (one fewer SGD run per condition)."""
    sgd_step, sam_step = 0.1, 0.25
    hour = 3600
    sgd, sam = 78 * 100 * sgd_step / hour, 78 * 100 * sam_step / hour
    late = 0.1 * sam + 0.9 * sgd
    every = sgd + 2 * sgd + sam + late + sgd  # sgd, sgd2x, sam, late_sam, swa
    primary = sgd + 2 * sgd + sam
    want = {  # plan: (grids, clean, 80% noise)
        "A": (2 * (4 * sgd + 5 * sam), 6 * every, 19 * every),
        "B": (2 * (4 * sgd + 5 * sam), 6 * every, 6 * every),
        "C": (2 * (2 * sgd + 3 * sam), 6 * every, 6 * every),
        "D": (2 * (2 * sgd + 3 * sam), 6 * every, 6 * primary),
        "E": (2 * (2 * sgd + 3 * sam), 3 * every, 3 * primary)}
    for name, _, *knobs in budget.PLANS:
        parts = budget.plan_hours(GATED, sgd_step, sam_step, *knobs)
        assert [parts["grids"], parts["clean"], parts["noise80"]] == pytest.approx(
            want[name]), name
    text = budget.report(GATED, sgd_step, sam_step, 30, spent=13.0)
    assert "left of the 15: 2.00" in text
    total_a = sum(want["A"])
    assert f"| {total_a:.1f} | no ({total_a / 2.0:.1f}x) |" in text


def test_study_commands_without_their_inputs_exit_2_in_one_line(tmp_path, monkeypatch,
                                                               capsys):
    monkeypatch.setattr(gates, "GATED_PATH", str(tmp_path / "gated.json"))
    monkeypatch.setattr(gates.read_gated, "__defaults__", (str(tmp_path / "gated.json"),))
    assert budget.main([]) == 2
    assert pick.main(["--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "gated.json does not exist" in err


def test_the_shared_grid_is_the_full_grids_runs_at_the_middle_values():
    """sam_vs_sgd.grid_shared launches runs of sam_vs_sgd.grid (the same names,
    so a larger plan's grid finds them done): its values, both conditions."""
    full = {run.name: run for run in grid.get_table(gated=GATED).runs()}
    shared = grid.get_table(gated=GATED, values=study.SHARED_GRID,
                            name="sam_vs_sgd.grid_shared").runs()
    assert len(shared) == 2 * (3 + 3) and {run.name for run in shared} <= set(full)
    for method, key in (("sgd", "optimizer.learning_rate"), ("sam", "sam.rho")):
        values = sorted({dict(run.overrides)[key] for run in shared
                         if f"_{method}_" in run.name})
        assert values == sorted(study.SHARED_GRID[method])
    for method, (_, all_values) in grid.METHODS.items():
        assert list(study.SHARED_GRID[method]) == list(all_values[1:4])  # the middle 3
