"""Tests of sam_jax.reproduce.collect (and the registry's sharpness readers):
run states, tables in markdown and CSV, Hessian numbers from analysis.json and
from the training log."""

import csv
import io
import json
import os
import time

import pytest

from helpers import run_reproduce_cli
from helpers import write
from sam_jax.reproduce import collect
from sam_jax.reproduce import registry
from sam_jax.reproduce import run_outputs


FAKE_TABLE = """
from sam_jax.reproduce import registry


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

    code, out, _ = run_reproduce_cli(capsys, "collect", "--table=" + table_file,
                           f"--root={root}", f"--plot={tmp_path}/fig.png")
    assert code == 0
    assert "| row 0 | 2.0 | 3.00 +- 1.00 (n=3) | 3.0 | 5.00 (n=1) [2 pending] |" in out
    assert "| row 1 | 4.0 | (unfinished 1, missing 2) |  |  |" in out
    assert "Runs: 9 (done 4, running 1, unfinished 1, failed 1, missing 2)" in out
    assert f"| {sgd_r0[1].name} | failed | exit code 3 (non-finite loss or gradient) |" in out
    assert "preempted; idle 60 min; launch again to resume" in out
    assert os.path.getsize(tmp_path / "fig.png") > 0

    code, summary, _ = run_reproduce_cli(capsys, "collect", "--table=" + table_file,
                               f"--root={root}", "--format=summary")
    assert code == 0 and summary == out[:out.index("\n\n| run | status |")] + "\n"

    code, out, _ = run_reproduce_cli(capsys, "collect", "--table=" + table_file,
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
    assert m_sharpness(run_outputs.read_outputs(sgd.workdir(root))) == 0.05
    with pytest.raises(ValueError, match="unknown sharpness quantity 'lambda_min'"):
        registry.sharpness_metric(1, "lambda_min")


def test_stability_metrics_read_the_every_steps_records(tmp_path):
    workdir = str(tmp_path / "run")
    lines = [{"step": 0, "split": "stability", "lambda_max": 5.0, "two_over_lr": 20.0},
             {"step": 10, "split": "train", "loss": 2.0},
             {"step": 40, "split": "stability", "lambda_max": 30.0,
              "two_over_lr": 20.0, "sam_edge": 12.0, "trace": 100.0},
             {"step": 80, "split": "stability", "lambda_max": 10.0,
              "two_over_lr": 20.0, "sam_edge": 8.0, "trace": 60.0},
             {"step": 100, "split": "stability", "lambda_max": 9.0,
              "two_over_lr": 20.0, "sam_edge": 9.0, "trace": 50.0}]
    write(f"{workdir}/metrics.jsonl", "".join(json.dumps(l) + "\n" for l in lines))
    outputs = run_outputs.read_outputs(workdir)
    assert [r["step"] for r in outputs["stability"]] == [0, 40, 80, 100]

    def value(quantity, when, outputs=outputs):
        return registry.stability_metric(quantity, when)(outputs)
    assert value("lambda_max", "last") == 9.0 and value("lambda_max", "first") == 5.0
    assert value("lambda_max", "max") == 30.0 and value("lambda_max", "step40") == 30.0
    assert value("lambda_max", "late") == pytest.approx(9.5)  # steps 80 and 100
    assert value("edge", "first") == 20.0  # no SAM edge there: 2 / lr
    assert value("edge_ratio", "late") == pytest.approx((10 / 8 + 1) / 2)
    assert value("trace", "first") == 100.0  # the first record that has one
    assert value("feature_rank", "last") is None and value("lambda_max", "step7") is None
    # "late": the last quarter of the run's steps (results.json), when known.
    assert value("lambda_max", "late", {**outputs, "results": {"steps": 200}}) is None
    assert registry.Cell("r", "c", None, metric="stability:trace:late").metric_fn()(
        outputs) == pytest.approx(55.0)
    with pytest.raises(ValueError, match="unknown stability time 'end'"):
        registry.stability_metric("lambda_max", "end")


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


BEST_OF_TABLE = """
from sam_jax.reproduce import registry


def get_table(seeds=None):
    def runs(method, epochs):
        return registry.seeded_runs(f"configs/quickstart.py:{method}",
                                    {"num_epochs": epochs}, 3)

    def runs_for(row, column):
        if column == "best":
            return registry.BestOf((("1x", runs(row, 10)), ("2x", runs(row, 20))))
        return runs(row, 10 if column == "sgd" else 20)

    return registry.grid_table(
        "best_of", "Best of", (("sgd", "error"), ("sam", "accuracy")),
        (("sgd", "1x"), ("sgd2x", "2x"), ("best", "best")), {("sgd", "best"): 4.0},
        runs_for, lambda row, column: "error" if row == "sgd" else "accuracy")
"""


def test_a_best_of_cell_reports_the_better_groups_mean(tmp_path, capsys):
    from sam_jax.reproduce import load_table
    path = tmp_path / "best_of.py"
    path.write_text(BEST_OF_TABLE)
    table, root = load_table(str(path)), str(tmp_path)
    best = table.cell("sgd", "best")
    assert [label for label, _ in best.alternatives] == ["1x", "2x"]
    assert best.runs == table.cell("sgd", "sgd").runs + table.cell("sgd", "sgd2x").runs
    # Error: 1x 5, 7, 6 % (mean 6); 2x 4, 6 % and one missing (mean 5).
    # Accuracy: 1x 95, 93 % (mean 94); 2x 92 % (mean 92).
    errors = {("sgd", "sgd"): [0.05, 0.07, 0.06], ("sgd", "sgd2x"): [0.04, 0.06],
              ("sam", "sgd"): [0.05, 0.07], ("sam", "sgd2x"): [0.08]}
    for (row, column), values in errors.items():
        for run, error in zip(table.cell(row, column).runs, values):
            write(f"{run.workdir(root)}/results.json", {"test_error": error})
    cells, _ = collect.collect_table(table, root)
    by_position = {(c.cell.row, c.cell.column): c for c in cells}
    sgd_best, accuracy_best = by_position[("sgd", "best")], by_position[("sam", "best")]
    assert sgd_best.chosen == "2x" and sgd_best.mean == pytest.approx(5.0)
    assert sgd_best.groups == (("1x", pytest.approx((5.0, 7.0, 6.0))),
                               ("2x", pytest.approx((4.0, 6.0))))
    assert accuracy_best.chosen == "1x" and accuracy_best.mean == pytest.approx(94.0)
    assert collect.format_ours(sgd_best) == "5.00 +- 1.41 (n=2, 2x) [1 pending]"
    assert collect.format_ours(accuracy_best) == "94.00 +- 1.41 (n=2, 1x) [3 pending]"

    code, out, _ = run_reproduce_cli(capsys, "collect", f"--table={path}",
                                     f"--root={root}", "--format=summary")
    assert code == 0
    assert ("| error | 6.00 +- 1.00 (n=3) | 5.00 +- 1.41 (n=2) [1 pending] | 4.0 | "
            "5.00 +- 1.41 (n=2, 2x) [1 pending] |") in out
    assert "a best-of cell gives the better of its groups" in out
    with pytest.raises(ValueError, match="runs must be the alternatives' runs"):
        registry.Cell("sgd", "best", None, best.runs[:3], "error", best.alternatives)


def test_a_damaged_results_json_is_unfinished_for_collect_and_launch(tmp_path):
    """The trainer re-evaluates such a run; collect and launch must agree that
    it is not done (one answer about one run)."""
    from sam_jax.reproduce import launchers
    from sam_jax.reproduce import load_table
    table, root = load_table(fake_table_file(tmp_path)), str(tmp_path)
    run = table.cell("r0", "sam").runs[0]
    write(f"{run.workdir(root)}/metrics.jsonl", "{}\n")
    with open(f"{run.workdir(root)}/results.json", "w") as f:
        f.write('{"test_error": 0.')  # cut short
    os.utime(f"{run.workdir(root)}/metrics.jsonl", (time.time() - 3600,) * 2)
    status = collect.run_status(run, root)
    assert status.status == "unfinished"
    assert not launchers.is_finished(run, root)
    write(f"{run.workdir(root)}/results.json", {"test_error": 0.02})
    assert collect.run_status(run, root).status == "done"
    assert launchers.is_finished(run, root)


def test_a_runs_record_holds_what_the_tables_read_and_stands_in_for_its_workdir(tmp_path):
    """run_outputs.jsonl keeps results, status's state / exit code / seconds and
    the sharpness and stability records, drops the scratch, and collect reads
    it where the workdir is gone (a fresh checkout)."""
    from sam_jax.reproduce import load_table
    table, root = load_table("figure3_hessian"), str(tmp_path)
    sgd = table.cell("epoch1", "sgd_lmax").runs[0]
    sharpness = {"step": 195, "split": "sharpness", "epoch": 1, "lambda_max": 60.0,
                 "lambda_max_over_lambda_5": 2.0}
    stability = {"step": 5, "split": "stability", "lambda_max": 3.0}
    write(f"{sgd.workdir(root)}/metrics.jsonl", "".join(json.dumps(line) + "\n" for line in (
        {"step": 10, "split": "train", "loss": 2.0}, sharpness, stability,
        {"step": 195, "split": "eval", "error": 0.1})))
    write(f"{sgd.workdir(root)}/results.json", {"test_error": 0.05, "steps": 195})
    write(f"{sgd.workdir(root)}/status.json", {
        "state": "done", "exit_code": 0, "elapsed_s": 12.5, "launcher": "local",
        "command": "python -m sam_jax.main ...", "host": "vm", "time": 1.0})
    write(f"{sgd.workdir(root)}/config.json", {"seed": 0})
    before = collect.to_markdown(table, *collect.collect_table(table, root))

    assert run_outputs.main([sgd.workdir(root)]) == 0
    with open(tmp_path / "run_outputs.jsonl") as f:
        (line,) = f.read().splitlines()
    assert json.loads(line) == {
        "name": sgd.name, "results": {"test_error": 0.05, "steps": 195},
        "status": {"state": "done", "exit_code": 0, "elapsed_s": 12.5},
        "sharpness": [sharpness], "stability": [stability]}
    os.rename(sgd.workdir(root), str(tmp_path / "elsewhere"))
    cells, statuses = collect.collect_table(table, root)
    assert statuses[sgd.name].status == "done"
    values = {(c.cell.row, c.cell.column): c.mean for c in cells}
    assert values[("epoch1", "sgd_lmax")] == 60.0 and values[("epoch1", "sgd_ratio")] == 2.0
    assert collect.to_markdown(table, cells, statuses) == before


def test_a_recorded_run_that_did_not_finish_reads_unfinished_or_failed(tmp_path, capsys):
    from sam_jax.reproduce import load_table
    table_file = fake_table_file(tmp_path)
    table, root = load_table(table_file), str(tmp_path / "root")
    failed, preempted, never = table.cell("r0", "sam").runs
    write(f"{failed.workdir(root)}/status.json", {"state": "failed", "exit_code": 3})
    write(f"{preempted.workdir(root)}/status.json", {"state": "preempted", "exit_code": 75})
    run_outputs.refresh([failed.workdir(root), preempted.workdir(root)])
    for run in (failed, preempted):
        os.remove(f"{run.workdir(root)}/status.json")
        os.rmdir(run.workdir(root))
    statuses = collect.collect_table(table, root)[1]
    assert [statuses[r.name].status for r in (failed, preempted, never)] == [
        "failed", "unfinished", "missing"]
    assert statuses[preempted.name].detail.startswith("preempted; recorded, no workdir")
    write(f"{root}/run_outputs.jsonl", '{"results": {}}\n')  # no name
    code, _, err = run_reproduce_cli(capsys, "collect", "--table=" + table_file,
                                     f"--root={root}")
    assert code == 2 and "run_outputs.jsonl line 1 is not a run's record" in err
