"""The data model of a paper table: rows x columns of cells, each a list of runs.

A `Run` is one training run: a config (`configs/FILE.py:ARG`), config overrides
and a seed. It has a readable workdir name, unique within a table, and a
command line; two tables that ask for the same run share its workdir under the
same root. A `Cell` holds the paper's number (None where the paper has none),
the runs whose mean we compare with it (one per seed) and the metric read from
each run; a cell may instead hold alternative groups of runs and report the
better group's mean (`BestOf`: the paper's SGD figures, the better of SGD at
SAM's epochs and at twice them). A `Table` is the cells plus the row and column
labels.

Table modules in experiments/ define `get_table(seeds=None) -> Table`; the CLI
(`python -m sam_jax.reproduce`) plans, launches and collects them.
"""

import dataclasses
import fnmatch
import hashlib
import itertools
import re
import shlex
from typing import Any, Callable, Optional, Sequence

Overrides = tuple[tuple[str, Any], ...]  # sorted (config key, value) pairs
MAX_NAME_LENGTH = 150


def format_value(value: Any) -> str:
    """A config value as `--config.key=VALUE` wants it (and as a name part)."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: `python -m sam_jax.main --config=CONFIG ...`.

    `seed_keys` are the config keys that take the seed (the label-noise tables
    also draw a new noisy label set per seed). `analyses` name the
    `python -m sam_jax.analysis --what=...` steps that follow training.
    """
    config: str  # "configs/cifar_wrn.py:cifar10,basic,200,sam"
    overrides: Overrides = ()
    seed: int = 0
    seed_keys: tuple[str, ...] = ("seed",)
    analyses: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """Readable and unique: config stem, ARG, overrides, seed."""
        path, _, arg = self.config.partition(":")
        stem = path.rsplit("/", 1)[-1].removesuffix(".py")
        parts = [stem] + [a for a in arg.split(",") if a]
        parts += [f"{key}={format_value(value)}" for key, value in self.overrides]
        name = re.sub(r"[^A-Za-z0-9._=+-]", "-", "_".join(parts))
        if len(name) > MAX_NAME_LENGTH:  # keep it short and still unique
            digest = hashlib.sha1(name.encode()).hexdigest()[:10]
            name = f"{name[:MAX_NAME_LENGTH - 11]}-{digest}"
        # Seed keys are part of the name: the same seed given to other keys is
        # another run (e.g. a new noisy label set per seed).
        return name + "".join(f"_{key}{self.seed}" for key in self.seed_keys)

    def workdir(self, root: str) -> str:
        return f"{root.rstrip('/')}/{self.name}"

    def argv(self, root: str, python: str = "python") -> list[str]:
        """The training command as an argument list."""
        argv = [python, "-m", "sam_jax.main", f"--config={self.config}",
                f"--workdir={self.workdir(root)}"]
        argv += [f"--config.{key}={self.seed}" for key in self.seed_keys]
        argv += [f"--config.{key}={format_value(value)}"
                 for key, value in self.overrides]
        return argv

    def command(self, root: str) -> str:
        return shlex.join(self.argv(root))

    def analysis_argvs(self, root: str, python: str = "python") -> list[list[str]]:
        return [[python, "-m", "sam_jax.analysis", f"--workdir={self.workdir(root)}",
                 f"--what={what}"] for what in self.analyses]


def make_run(config: str, overrides: Optional[dict] = None, seed: int = 0,
             **kwargs) -> Run:
    return Run(config, tuple(sorted((overrides or {}).items())), seed, **kwargs)


def seeded_runs(config: str, overrides: Optional[dict] = None, seeds: int = 1,
                **kwargs) -> tuple[Run, ...]:
    """One run per seed 0 .. seeds-1."""
    return tuple(make_run(config, overrides, seed, **kwargs) for seed in range(seeds))


# A metric turns what a run wrote ({"results": results.json, "analysis":
# analysis.json, "sharpness" / "stability": metrics.jsonl's records of that
# split}, any may be absent) into a number in the paper's units, or None when
# the run has not written it.
Metric = Callable[[dict], Optional[float]]


def _percent(key: str, complement: bool = False) -> Metric:
    def metric(outputs: dict) -> Optional[float]:
        value = outputs.get("results", {}).get(key)
        if value is None:
            return None
        return 100.0 * (1.0 - value if complement else value)
    return metric


def _result(key: str, scale: float = 1.0) -> Metric:
    def metric(outputs: dict) -> Optional[float]:
        value = outputs.get("results", {}).get(key)
        return None if value is None else scale * float(value)
    return metric


METRICS: dict[str, Metric] = {
    "error": _percent("test_error"),                  # top-1 error %
    "top5_error": _percent("test_top5_error"),
    "accuracy": _percent("test_error", complement=True),  # Table 4: accuracy %
    "validation_error": _percent("validation_error"),  # the rho search
    "validation_loss": _result("validation_loss"),  # breaks validation ties
    # config.evaluate_training_set: the training examples, un-augmented, in
    # evaluation mode, against the labels trained on; with label noise, the
    # share of the corrupted examples predicted as their noisy label.
    "train_error": _percent("train_error"),
    "memorised": _percent("train_corrupted_error", complement=True),
    "swa_train_error": _percent("swa_train_error"),
    "swa_memorised": _percent("swa_train_corrupted_error", complement=True),
    # SWA's averaged weights (runs with swa.start_fraction set).
    "swa_error": _percent("swa_test_error"),
    "swa_validation_error": _percent("swa_validation_error"),
    # The cost ledger (results.json): forward + backward passes over a batch
    # of the run, in thousands, and the training wall-clock seconds
    # (compilation, evaluation and checkpoints excluded).
    "kilo_gradient_evaluations": _result("gradient_evaluations", 1e-3),
    "train_seconds": _result("train_seconds"),
}
HIGHER_IS_BETTER = frozenset({"accuracy"})  # for the others, lower is better


def _sharpness_records(outputs: dict) -> list[dict]:
    """Every sharpness record a run wrote: metrics.jsonl's "sharpness" split, then
    analysis.json's "hessian" section (one dict, a list, or a dict of them).

    The log comes first: its records all use one subset, so the epochs of a
    run compare; an analysis of the same epoch (another subset) is a fallback.
    """
    section = outputs.get("analysis", {}).get("hessian")
    records = []
    if isinstance(section, dict) and not any(isinstance(v, dict) for v in section.values()):
        records = [section]  # one analysis, of the latest checkpoint
    elif isinstance(section, (dict, list)):
        values = section.values() if isinstance(section, dict) else section
        records = [record for record in values if isinstance(record, dict)]
    return list(outputs.get("sharpness", [])) + records


def _record_epoch(record: dict, results: dict) -> Optional[float]:
    if "epoch" in record:
        return float(record["epoch"])
    if "step" in record and results.get("steps") and results.get("epochs"):
        return record["step"] * results["epochs"] / results["steps"]
    return None


def _top_eigenvalues(record: dict) -> Optional[tuple[float, float]]:
    """(lambda_max, lambda_max / lambda_5)."""
    values = record.get("top_eigenvalues") or record.get("eigenvalues")
    if values and len(values) >= 5:
        return float(values[0]), float(values[0]) / float(values[4])
    if "lambda_max" in record and "lambda_max_over_lambda_5" in record:
        return float(record["lambda_max"]), float(record["lambda_max_over_lambda_5"])
    return None


def _quantity(record: dict, quantity: str) -> Optional[float]:
    if quantity == "m_sharpness":
        value = record.get("m_sharpness")
        return None if value is None else float(value)
    top = _top_eigenvalues(record)
    if top is None:
        return None
    return top[1] if quantity == "ratio" else top[0]


SHARPNESS_QUANTITIES = ("lambda_max", "ratio", "m_sharpness")


def sharpness_metric(epoch: int, quantity: str) -> Metric:
    """lambda_max, lambda_max / lambda_5 ("ratio") or m_sharpness at `epoch`.

    Read from metrics.jsonl's "sharpness" records (`config.sharpness`, logged
    during training) and from analysis.json's "hessian" section (`python -m
    sam_jax.analysis --what=hessian`: one record of the latest checkpoint, or a
    list / dict of records). A record names its "epoch" or its "step"
    (converted with results.json's steps / epochs) and has "top_eigenvalues"
    (largest first) or "lambda_max" and "lambda_max_over_lambda_5".
    """
    if quantity not in SHARPNESS_QUANTITIES:
        raise ValueError(f"unknown sharpness quantity {quantity!r}; allowed: "
                         f"{', '.join(SHARPNESS_QUANTITIES)}")

    def metric(outputs: dict) -> Optional[float]:
        results = outputs.get("results", {})
        for record in _sharpness_records(outputs):
            at = _record_epoch(record, results)
            value = _quantity(record, quantity)
            if at is not None and abs(at - epoch) < 1e-6 and value is not None:
                return value
        return None
    return metric


# The edge of stability's records (metrics.jsonl's "stability" split,
# config.sharpness.every_steps): derived quantities beside the records' keys.
EDGE_KEYS = ("sam_edge", "usam_edge", "two_over_lr")


def stability_value(record: dict, quantity: str) -> Optional[float]:
    """A record's `quantity`: any of its keys, or "edge" (the method's
    predicted edge: SAM's, else USAM's, else 2 / lr) and "edge_ratio"
    (lambda_max / edge)."""
    if quantity in ("edge", "edge_ratio"):
        edge = next((record[k] for k in EDGE_KEYS if record.get(k) is not None), None)
        if edge is None or quantity == "edge":
            return None if edge is None else float(edge)
        return float(record["lambda_max"]) / edge if edge > 0 else None
    value = record.get(quantity)
    return None if value is None else float(value)


def stability_metric(quantity: str, when: str) -> Metric:
    """`quantity` of the stability records at `when`: "last" (the last record),
    "late" (the mean over the records of the last quarter of the run's steps),
    "max" (the largest), "first", or "stepN" (the record at step N)."""
    if when not in ("last", "late", "max", "first") and not re.fullmatch(r"step\d+", when):
        raise ValueError(f"unknown stability time {when!r}; allowed: last, late, max, "
                         "first, stepN")

    def metric(outputs: dict) -> Optional[float]:
        records = sorted(outputs.get("stability") or [], key=lambda r: r["step"])
        if when.startswith("step"):
            records = [r for r in records if r["step"] == int(when[4:])]
        elif when == "late" and records:
            last = outputs.get("results", {}).get("steps", records[-1]["step"])
            records = [r for r in records if r["step"] >= 0.75 * last]
        values = [(r["step"], stability_value(r, quantity)) for r in records]
        values = [(step, v) for step, v in values if v is not None]
        if not values:
            return None
        if when == "late":
            return sum(v for _, v in values) / len(values)
        if when == "max":
            return max(v for _, v in values)
        return values[0][1] if when == "first" else values[-1][1]
    return metric


Group = tuple[str, tuple[Run, ...]]  # (label, runs)


@dataclasses.dataclass(frozen=True)
class BestOf:
    """Alternative groups of runs for one cell, e.g. SGD at SAM's epochs ("1x")
    and at twice them ("2x"); the cell reports the better group's mean. A
    `runs_for` of `grid_table` may return one instead of a list of runs."""
    groups: tuple[Group, ...]

    @property
    def runs(self) -> tuple[Run, ...]:
        return tuple(run for _, runs in self.groups for run in runs)


@dataclasses.dataclass(frozen=True)
class Cell:
    """The paper's number for (row, column) and the runs that reproduce it.

    With `alternatives` (label, runs) groups, `runs` is their concatenation
    and the cell's value is the mean of the better group (see collect.py).
    """
    row: str  # a row key
    column: str  # a column key
    paper: Optional[float]
    runs: tuple[Run, ...] = ()
    # a METRICS key, "sharpness:EPOCH:QUANTITY" or "stability:QUANTITY:WHEN"
    metric: str = "error"
    alternatives: tuple[Group, ...] = ()

    def __post_init__(self):
        if self.alternatives and self.runs != BestOf(self.alternatives).runs:
            raise ValueError(f"cell ({self.row}, {self.column}): runs must be the "
                             "alternatives' runs, in order")

    @property
    def higher_is_better(self) -> bool:
        return self.metric in HIGHER_IS_BETTER

    def metric_fn(self) -> Metric:
        if self.metric.startswith("sharpness:"):
            _, epoch, quantity = self.metric.split(":")
            return sharpness_metric(int(epoch), quantity)
        if self.metric.startswith("stability:"):
            _, quantity, when = self.metric.split(":")
            return stability_metric(quantity, when)
        return METRICS[self.metric]


@dataclasses.dataclass(frozen=True)
class Table:
    """Rows x columns of cells. Row and column keys are short (for --rows);
    labels are what the printed table shows."""
    name: str
    title: str
    rows: tuple[tuple[str, str], ...]  # (key, label)
    columns: tuple[tuple[str, str], ...]  # (key, label)
    cells: tuple[Cell, ...]
    unit: str = "test error %"
    notes: str = ""
    # Optional views that `collect` adds: plot(table, cells, path) draws the
    # --plot figure instead of the default one; summary(table, cells) -> str
    # is markdown printed under the table (e.g. a ranking).
    plot: Optional[Callable] = dataclasses.field(default=None, compare=False)
    summary: Optional[Callable] = dataclasses.field(default=None, compare=False)

    def __post_init__(self):
        row_keys = {key for key, _ in self.rows}
        column_keys = {key for key, _ in self.columns}
        by_name = {}
        for cell in self.cells:
            if cell.row not in row_keys or cell.column not in column_keys:
                raise ValueError(f"{self.name}: cell ({cell.row}, {cell.column}) "
                                 "is not in the rows and columns")
            for run in cell.runs:
                if by_name.setdefault(run.name, run) != run:
                    raise ValueError(f"{self.name}: two runs named {run.name}")

    def runs(self) -> list[Run]:
        """Every distinct run, in cell order (cells may share runs)."""
        return list({run.name: run for cell in self.cells for run in cell.runs}.values())

    def cell(self, row: str, column: str) -> Optional[Cell]:
        return next((c for c in self.cells if (c.row, c.column) == (row, column)), None)

    def paper_cells(self) -> list[Cell]:
        return [cell for cell in self.cells if cell.paper is not None]


def select_rows(table: Table, patterns: Sequence[str]) -> Table:
    """The table restricted to rows matching any of `patterns` (fnmatch globs).

    Raises KeyError naming a pattern that matches no row.
    """
    keys = [key for key, _ in table.rows]
    for pattern in patterns:
        if not fnmatch.filter(keys, pattern):
            raise KeyError(f"unknown row {pattern!r} in {table.name}; rows: "
                           f"{', '.join(keys)}")
    kept = {key for key in keys if any(fnmatch.fnmatch(key, p) for p in patterns)}
    return dataclasses.replace(
        table, rows=tuple(r for r in table.rows if r[0] in kept),
        cells=tuple(c for c in table.cells if c.row in kept))


def grid_table(name: str, title: str, rows, columns, paper: dict, runs_for,
               metric_for=lambda row, column: "error", **kwargs) -> Table:
    """A table with a cell for every (row, column) that has runs or a paper number.

    `paper[(row, column)]` is the paper's number; `runs_for(row, column)` the
    runs (empty: a paper-only cell) or a `BestOf`; `metric_for(row, column)`
    the metric.
    """
    cells = []
    for (row, _), (column, _) in itertools.product(rows, columns):
        spec = runs_for(row, column)
        alternatives = spec.groups if isinstance(spec, BestOf) else ()
        runs = spec.runs if isinstance(spec, BestOf) else tuple(spec)
        number = paper.get((row, column))
        if runs or number is not None:
            cells.append(Cell(row, column, number, runs, metric_for(row, column),
                              alternatives))
    return Table(name, title, tuple(rows), tuple(columns), tuple(cells), **kwargs)


def sweep_label(overrides: dict) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in sorted(overrides.items()))


def sweep_table(name: str, config: str, override_sets: Sequence[dict], seeds: int,
                metric: str = "error", **run_kwargs) -> Table:
    """One row per override set, one column: what `collect` shows for a sweep."""
    rows, cells = [], []
    for index, overrides in enumerate(override_sets):
        key = f"s{index}"
        rows.append((key, sweep_label(overrides) or "(base config)"))
        cells.append(Cell(key, "ours", None,
                          seeded_runs(config, overrides, seeds, **run_kwargs), metric))
    unit = "validation error %" if metric == "validation_error" else "test error %"
    return Table(name, f"Sweep {name} over {config}", tuple(rows),
                 (("ours", unit),), tuple(cells), unit=unit)
