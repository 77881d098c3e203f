"""Command line: plan, launch and collect the paper's tables.

  python -m sam_jax.reproduce plan    --table=table1_cifar --root=DIR [--rows=wrn200_*] [--seeds=N]
  python -m sam_jax.reproduce launch  --table=... --root=DIR --launcher=local|slurm|tpu [--dry_run]
  python -m sam_jax.reproduce collect --table=... --root=DIR [--format=markdown|summary|csv] [--plot=X.png]
  python -m sam_jax.reproduce sweep   --sweep=experiments/sweeps/rho_search.py --root=DIR --launcher=local

--table is a name (see `plan --table=list`) or a Python file with get_table();
plan, launch and collect also take --sweep=FILE instead. Bad input (an unknown
table, row or launcher) prints one line and exits with code 2.
"""

import argparse
import os
import shlex
import subprocess
import sys

from sam_jax import reproduce
from sam_jax.reproduce import collect
from sam_jax.reproduce import launchers

EXIT_BAD_INPUT = 2
EXIT_SOME_RUNS_NOT_DONE = 1


class BadInput(Exception):
    """Reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as everywhere in sam_jax
        raise BadInput(message)


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    what = common.add_mutually_exclusive_group()
    what.add_argument("--table", help="table name or a .py file with get_table()")
    what.add_argument("--sweep", help="sweep file: CONFIG and get_sweep()")
    common.add_argument("--root", help="directory holding one workdir per run")
    common.add_argument("--rows", default="",
                        help="comma-separated row keys or globs (default: all)")
    common.add_argument("--seeds", type=int, default=None,
                        help="seeds per cell (default: the table's)")
    common.add_argument("--base_config", default=None,
                        help="a sweep's base config instead of its CONFIG")

    launch = _Parser(add_help=False)
    launch.add_argument("--launcher", default="local",
                        help="local | slurm | tpu")
    launch.add_argument("--dry_run", action="store_true",
                        help="print what would run (slurm: the script), run nothing")
    slurm = launch.add_argument_group("slurm")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--time", default="24:00:00")
    slurm.add_argument("--nodes", type=int, default=1)
    slurm.add_argument("--tasks_per_node", type=int, default=1)
    slurm.add_argument("--gpus_per_node", type=int, default=8)
    slurm.add_argument("--cpus_per_task", type=int, default=None)
    slurm.add_argument("--max_parallel", type=int, default=None,
                       help="at most this many array tasks at once")
    slurm.add_argument("--setup", default="",
                       help="shell before each run, e.g. 'source .venv/bin/activate'")
    slurm.add_argument("--sbatch", action="append", default=[],
                       help="extra #SBATCH option, e.g. --sbatch=--account=abc")
    tpu = launch.add_argument_group("tpu")
    tpu.add_argument("--tpu_name", default="TPU_NAME")
    tpu.add_argument("--zone", default="ZONE")
    tpu.add_argument("--repo_dir", default="~/sam_jax",
                     help="this repository's path on the TPU VMs")
    tpu.add_argument("--execute", action="store_true",
                     help="run the gcloud commands (default: print them)")

    parser = _Parser(prog="python -m sam_jax.reproduce", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("plan", parents=[common], help="list every run")
    commands.add_parser("launch", parents=[common, launch], help="run the table")
    commands.add_parser("sweep", parents=[common, launch], help="run a sweep file")
    collect_parser = commands.add_parser("collect", parents=[common],
                                         help="print ours next to the paper")
    collect_parser.add_argument("--format", default="markdown",
                                help="markdown | summary (markdown without the run list) | csv")
    collect_parser.add_argument("--plot", default=None, help="write a PNG figure here")
    collect_parser.add_argument("--running_window_s", type=float,
                                default=collect.RUNNING_WINDOW_S,
                                help="a run active this recently counts as running")
    return parser


def _absolute_root(root: str) -> str:
    return root if "://" in root else os.path.abspath(root)


def _load(args):
    """The table (rows selected) and the absolute root, or BadInput."""
    if args.command == "sweep" and not args.sweep:
        raise BadInput("sweep needs --sweep=FILE")
    if not (args.table or args.sweep):
        raise BadInput("give --table=NAME (or --sweep=FILE); tables: "
                       + ", ".join(reproduce.TABLES))
    if args.table == "list":
        print("\n".join(reproduce.TABLES))
        sys.exit(0)
    if not args.root:
        raise BadInput("give --root=DIR, where the runs' workdirs go")
    if args.seeds is not None and args.seeds < 1:
        raise BadInput(f"--seeds={args.seeds} must be >= 1")
    try:
        if args.sweep:
            table = reproduce.load_sweep(args.sweep, args.seeds, args.base_config)
        else:
            table = reproduce.load_table(args.table, args.seeds)
    except reproduce.UnknownTableError as e:
        raise BadInput(str(e)) from None
    if args.rows:
        from experiments import registry
        try:
            table = registry.select_rows(table, args.rows.split(","))
        except KeyError as e:
            raise BadInput(e.args[0]) from None
    return table, _absolute_root(args.root)


def plan(table, root) -> int:
    runs = table.runs()
    print(f"# {table.name}: {table.title}")
    for run in runs:
        print(f"{run.name}\n  workdir: {run.workdir(root)}\n  command: {run.command(root)}")
        for argv in run.analysis_argvs(root):
            print(f"  then:    {shlex.join(argv)}")
    with_runs = sum(1 for cell in table.cells if cell.runs)
    print(f"{table.name}: {len(runs)} runs, {len(table.paper_cells())} paper cells, "
          f"{with_runs} cells with runs")
    return 0


def _slurm_options(args) -> launchers.SlurmOptions:
    for name in ("nodes", "tasks_per_node"):
        if getattr(args, name) < 1:
            raise BadInput(f"--{name}={getattr(args, name)} must be >= 1")
    if args.gpus_per_node < 0:  # 0: no GPU request (a CPU partition)
        raise BadInput(f"--gpus_per_node={args.gpus_per_node} must be >= 0")
    for name in ("cpus_per_task", "max_parallel"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise BadInput(f"--{name}={getattr(args, name)} must be >= 1")
    return launchers.SlurmOptions(
        partition=args.partition, time=args.time, nodes=args.nodes,
        tasks_per_node=args.tasks_per_node, gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task, max_parallel=args.max_parallel,
        setup=args.setup, extra=tuple(args.sbatch))


def launch(table, root, args) -> int:
    if args.launcher not in ("local", "slurm", "tpu"):
        raise BadInput(f"unknown launcher {args.launcher!r}; allowed: local, slurm, tpu")
    runs = table.runs()
    if args.launcher == "local":
        outcomes = launchers.launch_local(runs, root, reproduce.REPO, dry_run=args.dry_run)
        counts = {}
        for outcome in outcomes.values():
            counts[outcome] = counts.get(outcome, 0) + 1
        print(f"{table.name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        not_done = set(counts) - {"done", "skipped", "would run"}
        return EXIT_SOME_RUNS_NOT_DONE if not_done or len(outcomes) < len(runs) else 0
    if args.launcher == "slurm":
        return launch_slurm(table, root, runs, args)
    return launch_tpu(root, runs, args)


def launch_slurm(table, root, runs, args) -> int:
    options = _slurm_options(args)
    local_root = "://" not in root
    pending = [run for run in runs
               if not (local_root and launchers.is_finished(run, root))]
    if not pending:
        print(f"{table.name}: all {len(runs)} runs finished; nothing to submit")
        return 0
    slurm_dir = os.path.join(root, "slurm")
    commands_path = os.path.join(slurm_dir, f"{table.name}.commands.tsv")
    script_path = os.path.join(slurm_dir, f"{table.name}.sbatch")
    script = launchers.slurm_script(f"sam-{table.name}", len(pending), commands_path,
                                    reproduce.REPO, slurm_dir, options)
    commands = launchers.slurm_commands(pending, root, options)
    submit = ["sbatch", script_path]
    if args.dry_run:
        print(f"# {script_path}\n{script}")
        print(f"# {commands_path} ({len(pending)} lines, one per array task)")
        print(commands, end="")
        print(f"# not submitted (--dry_run); would run: {shlex.join(submit)}")
        return 0
    os.makedirs(slurm_dir, exist_ok=True)
    with open(commands_path, "w") as f:
        f.write(commands)
    with open(script_path, "w") as f:
        f.write(script)
    print(f"{shlex.join(submit)}  # {len(pending)} of {len(runs)} runs", flush=True)
    return subprocess.run(submit).returncode


def launch_tpu(root, runs, args) -> int:
    # The workers write each checkpoint together, so the root is storage they
    # all mount at one path; a relative one would be made absolute here, not
    # there. The trainer writes its workdir with os and open(), which take a
    # gs:// path for a local directory named "gs:".
    if "://" in args.root or not os.path.isabs(args.root):
        raise BadInput(f"--root={args.root}: give an absolute path that every TPU worker "
                       "mounts (NFS, Filestore, gcsfuse); the trainer cannot write gs://")
    if args.execute and not args.dry_run and (args.tpu_name == "TPU_NAME"
                                              or args.zone == "ZONE"):
        raise BadInput("--execute needs --tpu_name=NAME and --zone=ZONE (the pod's)")
    failed = 0
    for run in runs:
        for line in launchers.tpu_command(run, root, args.tpu_name, args.zone,
                                          args.repo_dir):
            print(line, flush=True)
            if args.execute and not args.dry_run:
                code = subprocess.run(line, shell=True).returncode
                if code:
                    print(f"{run.name}: exit code {code}", flush=True)
                    failed += 1
                    break
    return EXIT_SOME_RUNS_NOT_DONE if failed else 0


def collect_command(table, root, args) -> int:
    if args.format not in ("markdown", "summary", "csv"):
        raise BadInput(f"unknown format {args.format!r}; allowed: markdown, summary, csv")
    cells, statuses = collect.collect_table(table, root,
                                            running_window_s=args.running_window_s)
    if args.format == "csv":
        print(collect.to_csv(table, cells), end="")
    else:
        print(collect.to_markdown(table, cells, statuses,
                                  list_runs=args.format == "markdown"), end="")
    if args.plot:
        collect.plot(table, cells, args.plot)
    return 0


def main(argv=None) -> int:
    try:
        args = _parser().parse_args(argv)
        table, root = _load(args)
        if args.command == "plan":
            return plan(table, root)
        if args.command in ("launch", "sweep"):
            return launch(table, root, args)
        return collect_command(table, root, args)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; launch again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `plan ... | head` ends quietly
    sys.exit(main())
