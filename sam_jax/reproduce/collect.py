"""Reads every run of a table back and prints ours next to the paper's numbers.

A run's status comes from its workdir alone (so collect works for any
launcher): `done` (results.json), `failed` (status.json records a non-zero
exit other than 75), `running` (checkpoints, metrics or a launcher status
written in the last `running_window_s`), `unfinished` (such files, older: a
preempted or killed run that resumes when launched again), `missing`
(nothing). A run without a workdir here is read from its line in the root's
run_outputs.jsonl (a study's committed record, run_outputs.py) where it has
one: done, failed or unfinished as its outputs say.
"""

import csv
import dataclasses
import io
import math
import os
import time
from typing import Optional

from sam_jax import workdir as workdir_lib
from sam_jax.errors import EXIT_MEANINGS, EXIT_PREEMPTED
from sam_jax.reproduce import registry
from sam_jax.reproduce import run_outputs

DONE, RUNNING, UNFINISHED, FAILED, MISSING = (
    "done", "running", "unfinished", "failed", "missing")
STATUSES = (DONE, RUNNING, UNFINISHED, FAILED, MISSING)
RUNNING_WINDOW_S = 600.0


@dataclasses.dataclass(frozen=True)
class RunStatus:
    name: str
    status: str
    detail: str
    outputs: dict


def run_status(run: registry.Run, root: str, now: Optional[float] = None,
               running_window_s: float = RUNNING_WINDOW_S,
               recorded: Optional[dict] = None) -> RunStatus:
    """`recorded`: the root's run_outputs.jsonl (read here if not given)."""
    workdir = run.workdir(root)
    has_workdir = os.path.isdir(workdir)
    if has_workdir:
        outputs = run_outputs.read_outputs(workdir)
    else:
        recorded = run_outputs.read(root) if recorded is None else recorded
        outputs = recorded.get(run.name, {})
    now = time.time() if now is None else now
    status_file = outputs.get("status", {})
    if "results" in outputs:
        results = outputs["results"]
        error = results.get("test_error", results.get("validation_error"))
        detail = f"error {100 * error:.2f}%" if error is not None else ""
        missing = [what for what in run.analyses if what not in outputs.get("analysis", {})]
        if missing:
            detail += f"; no {', '.join(missing)} in {workdir_lib.ANALYSIS_FILE}"
        return RunStatus(run.name, DONE, detail.strip("; "), outputs)
    exit_code = status_file.get("exit_code")
    if status_file.get("state") == FAILED and exit_code not in (0, EXIT_PREEMPTED):
        meaning = EXIT_MEANINGS.get(exit_code, "")
        return RunStatus(run.name, FAILED, f"exit code {exit_code}"
                         + (f" ({meaning})" if meaning else ""), outputs)
    if not has_workdir:  # recorded unfinished, or never run
        preempted = "preempted; " if exit_code == EXIT_PREEMPTED else ""
        return (RunStatus(run.name, UNFINISHED, f"{preempted}recorded, no workdir here; "
                          "launch again to run it", outputs) if outputs
                else RunStatus(run.name, MISSING, "", outputs))
    last = run_outputs.last_activity(workdir)
    if last is None:
        return RunStatus(run.name, MISSING, "", outputs)
    age = max(now - last, 0.0)
    if age <= running_window_s:
        return RunStatus(run.name, RUNNING, f"active {age:.0f}s ago", outputs)
    detail = f"idle {age / 60:.0f} min"
    if exit_code == EXIT_PREEMPTED:
        detail = "preempted; " + detail
    return RunStatus(run.name, UNFINISHED, detail + "; launch again to resume", outputs)


@dataclasses.dataclass(frozen=True)
class CellResult:
    """Ours for a cell. For a cell with alternatives, `values` are those of
    the group with the better mean (`chosen`, its label); `groups` has every
    group's values."""
    cell: registry.Cell
    values: tuple[float, ...]  # ours, one per run with a value
    runs: tuple[RunStatus, ...]
    groups: tuple[tuple[str, tuple[float, ...]], ...] = ()
    chosen: Optional[str] = None

    @property
    def num_values(self) -> int:
        """Runs with a value, in every group."""
        if self.groups:
            return sum(len(values) for _, values in self.groups)
        return len(self.values)

    @property
    def mean(self) -> Optional[float]:
        return sum(self.values) / len(self.values) if self.values else None

    @property
    def std(self) -> Optional[float]:
        """Sample standard deviation over seeds; None below two values."""
        n = len(self.values)
        if n < 2:
            return None
        mean = self.mean
        return math.sqrt(sum((v - mean) ** 2 for v in self.values) / (n - 1))


def collect_table(table: registry.Table, root: str, now: Optional[float] = None,
                  running_window_s: float = RUNNING_WINDOW_S):
    """(cell results in cell order, {run name: RunStatus} in run order)."""
    recorded = run_outputs.read(root)
    statuses = {run.name: run_status(run, root, now, running_window_s, recorded)
                for run in table.runs()}
    cells = []
    for cell in table.cells:
        metric = cell.metric_fn()

        def values_of(runs):
            values = [metric(statuses[run.name].outputs) for run in runs
                      if statuses[run.name].status == DONE]
            return tuple(v for v in values if v is not None)

        runs = tuple(statuses[run.name] for run in cell.runs)
        if not cell.alternatives:
            cells.append(CellResult(cell, values_of(cell.runs), runs))
            continue
        # The better group by its mean over the runs finished so far.
        groups = tuple((label, values_of(group)) for label, group in cell.alternatives)
        sign = -1.0 if cell.higher_is_better else 1.0
        chosen = min(((label, values) for label, values in groups if values),
                     key=lambda group: sign * sum(group[1]) / len(group[1]),
                     default=(None, ()))
        cells.append(CellResult(cell, chosen[1], runs, groups, chosen[0]))
    return cells, statuses


def format_ours(result: Optional[CellResult]) -> str:
    if result is None or not result.cell.runs:
        return ""
    if not result.values:
        counts = status_counts(result.runs)
        return "missing" if counts == {MISSING: len(result.runs)} else (
            "(" + ", ".join(f"{s} {n}" for s, n in counts.items()) + ")")
    text = f"{result.mean:.2f}"
    if result.std is not None:
        text += f" +- {result.std:.2f}"
    text += f" (n={len(result.values)}" + (f", {result.chosen})" if result.chosen else ")")
    pending = len(result.cell.runs) - result.num_values
    return text + (f" [{pending} pending]" if pending else "")


def format_paper(value: Optional[float]) -> str:
    return "" if value is None else str(value)


def status_counts(statuses) -> dict:
    counts = {}
    for status in statuses:
        counts[status.status] = counts.get(status.status, 0) + 1
    return {s: counts[s] for s in STATUSES if s in counts}


def _markdown_row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"


def to_markdown(table: registry.Table, cells, statuses, list_runs: bool = True) -> str:
    """The table wide (paper and ours side by side per column), the run counts,
    then (with `list_runs`) every run's status."""
    by_position = {(c.cell.row, c.cell.column): c for c in cells}
    has_paper = {column for (_, column), c in by_position.items()
                 if c.cell.paper is not None}
    has_runs = {column for (_, column), c in by_position.items() if c.cell.runs}
    header, keys = [""], []
    for column, label in table.columns:
        if column in has_paper:
            header.append(f"{label} paper")
            keys.append((column, "paper"))
        if column in has_runs:
            header.append(f"{label} ours")
            keys.append((column, "ours"))
    legend = f"Ours: mean +- std over finished seeds (n) of {table.unit}"
    if any(c.cell.alternatives for c in cells):
        legend += ("; a best-of cell gives the better of its groups (its label "
                   "after n)")
    legend += "; paper: the paper's number." if has_paper else "."
    lines = [f"## {table.title}", "",
             legend + (f" {table.notes}" if table.notes else ""),
             "", _markdown_row(header), _markdown_row(["---"] * len(header))]
    for row, label in table.rows:
        line = [label]
        for column, kind in keys:
            result = by_position.get((row, column))
            if kind == "paper":
                line.append(format_paper(result.cell.paper) if result else "")
            else:
                line.append(format_ours(result))
        lines.append(_markdown_row(line))
    if table.summary is not None:
        lines += ["", table.summary(table, cells).rstrip()]
    counts = status_counts(statuses.values())
    lines += ["", f"Runs: {len(statuses)} (" +
              ", ".join(f"{s} {n}" for s, n in counts.items()) + ")"]
    if list_runs:
        lines += ["", "| run | status | detail |", "|---|---|---|"]
        lines += [_markdown_row([s.name, s.status, s.detail]) for s in statuses.values()]
    return "\n".join(lines) + "\n"


def to_csv(table: registry.Table, cells) -> str:
    """One line per cell: paper, ours (mean, std, n) and its runs' statuses."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["table", "row", "column", "metric", "paper", "mean", "std", "n",
                     "runs", "statuses"])
    row_labels, column_labels = dict(table.rows), dict(table.columns)
    for result in cells:
        cell = result.cell
        writer.writerow([
            table.name, row_labels[cell.row], column_labels[cell.column], cell.metric,
            "" if cell.paper is None else cell.paper,
            "" if result.mean is None else f"{result.mean:.4f}",
            "" if result.std is None else f"{result.std:.4f}",
            len(result.values), len(cell.runs),
            " ".join(f"{s.name}:{s.status}" for s in result.runs)])
    return out.getvalue()


def plot(table: registry.Table, cells, path: str) -> None:
    """Ours (mean +- std) and the paper's number (hollow) per cell, x = rows
    (or the table's own plot)."""
    if table.plot is not None:
        table.plot(table, cells, path)
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [key for key, _ in table.rows]
    columns = table.columns
    width_inches = 2.0 + 0.45 * len(rows) * max(1, len(columns)) ** 0.5
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.0, width_inches)), 5.0))
    width = 0.8 / max(1, len(columns))
    by_position = {(c.cell.row, c.cell.column): c for c in cells}
    for index, (column, label) in enumerate(columns):
        color = f"C{index % 10}"
        offset = (index - (len(columns) - 1) / 2) * width
        ours = [(x + offset, by_position[(r, column)]) for x, r in enumerate(rows)
                if (r, column) in by_position and by_position[(r, column)].values]
        paper = [(x + offset, by_position[(r, column)].cell.paper)
                 for x, r in enumerate(rows) if (r, column) in by_position
                 and by_position[(r, column)].cell.paper is not None]
        if ours:
            ax.errorbar([x for x, _ in ours], [c.mean for _, c in ours],
                        yerr=[c.std or 0.0 for _, c in ours], fmt="o", color=color,
                        capsize=3, label=f"{label} (ours)")
        if paper:
            ax.plot([x for x, _ in paper], [v for _, v in paper], "s", color=color,
                    markerfacecolor="none", label=f"{label} (paper)")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([label for _, label in table.rows], rotation=45 if len(rows) > 5
                       else 0, ha="right" if len(rows) > 5 else "center")
    ax.set_ylabel(table.unit)
    ax.set_title(table.title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
