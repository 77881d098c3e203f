"""Command line: plan, launch and collect the paper's tables.

  python -m sam_jax.reproduce plan    --table=table1_cifar --root=DIR [--rows=wrn200_*] [--seeds=N]
  python -m sam_jax.reproduce launch  --table=... --root=DIR --launcher=local|slurm|tpu [--dry_run] [--shard=I/N]
  python -m sam_jax.reproduce collect --table=... --root=DIR [--format=markdown|summary|csv] [--plot=X.png]
  python -m sam_jax.reproduce sweep   --sweep=experiments/sweeps/rho_search.py --root=DIR --launcher=local

--table is a name (see `plan --table=list`) or a Python file with get_table();
plan, launch and collect also take --sweep=FILE instead. Bad input (an unknown
table, row or launcher) prints one line and exits with code 2.
"""

import os
import shlex
import subprocess
import sys
import types

from absl import flags

from sam_jax import cli
from sam_jax import declarations
from sam_jax import reproduce
from sam_jax.errors import BadInputError as BadInput
from sam_jax.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_SOME_RUNS_NOT_DONE
from sam_jax.reproduce import collect
from sam_jax.reproduce import launchers
from sam_jax.reproduce import preflight
from sam_jax.reproduce import registry


COMMANDS = ("plan", "launch", "sweep", "collect")


def _define_common(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("table", None, "table name or a .py file with get_table()",
                        flag_values=fv)
    flags.DEFINE_string("sweep", None, "sweep file: CONFIG and get_sweep()",
                        flag_values=fv)
    flags.DEFINE_string("root", None, "directory holding one workdir per run",
                        flag_values=fv)
    flags.DEFINE_string("rows", "", "comma-separated row keys or globs (default: all)",
                        flag_values=fv)
    flags.DEFINE_integer("seeds", None, "seeds per cell (default: the table's)",
                         flag_values=fv)
    flags.DEFINE_string("base_config", None, "a sweep's base config instead of its "
                        "CONFIG", flag_values=fv)


def _define_launch(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("launcher", "local", "local | slurm | tpu", flag_values=fv)
    flags.DEFINE_string("shard", "0/1", "local launcher: I/N runs every N-th run from "
                        "the I-th (0-based), so N launchers in parallel share a table",
                        flag_values=fv)
    flags.DEFINE_bool("dry_run", False, "print what would run (slurm: the script), "
                      "run nothing", flag_values=fv)
    # slurm
    flags.DEFINE_string("partition", None, "slurm partition", flag_values=fv)
    flags.DEFINE_string("time", "24:00:00", "slurm time limit per run", flag_values=fv)
    flags.DEFINE_integer("nodes", 1, "slurm nodes per run", flag_values=fv)
    flags.DEFINE_integer("tasks_per_node", 1, "processes per node", flag_values=fv)
    flags.DEFINE_integer("gpus_per_node", 8, "GPUs per node (0: none asked for)",
                         flag_values=fv)
    flags.DEFINE_integer("cpus_per_task", None, "CPUs per process", flag_values=fv)
    flags.DEFINE_integer("max_parallel", None, "at most this many array tasks at once",
                         flag_values=fv)
    flags.DEFINE_string("setup", "", "shell before each run, e.g. 'source "
                        ".venv/bin/activate'", flag_values=fv)
    flags.DEFINE_multi_string("sbatch", [], "extra #SBATCH option, e.g. "
                              "--sbatch=--account=abc", flag_values=fv)
    # tpu
    flags.DEFINE_string("tpu_name", "TPU_NAME", "TPU VM name", flag_values=fv)
    flags.DEFINE_string("zone", "ZONE", "TPU zone", flag_values=fv)
    flags.DEFINE_string("repo_dir", "~/sam_jax", "this repository's path on the TPU "
                        "VMs", flag_values=fv)
    flags.DEFINE_bool("execute", False, "run the gcloud commands (default: print "
                      "them)", flag_values=fv)


def _define_collect(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("format", "markdown", "markdown | summary (markdown without "
                        "the run list) | csv", flag_values=fv)
    flags.DEFINE_string("plot", None, "write a PNG figure here", flag_values=fv)
    flags.DEFINE_float("running_window_s", collect.RUNNING_WINDOW_S,
                       "a run active this recently counts as running", flag_values=fv)


def _flag_values(command: str) -> flags.FlagValues:
    fv = flags.FlagValues()
    _define_common(fv)
    if command in ("launch", "sweep"):
        _define_launch(fv)
    if command == "collect":
        _define_collect(fv)
    return fv


def _parse(argv) -> types.SimpleNamespace:
    """The command and its flags; BadInput (one line) for anything else."""
    argv = list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        raise BadInput(f"unknown command {command!r}; allowed: {', '.join(COMMANDS)} "
                       "(the first argument)")
    argv.remove(command)
    fv = _flag_values(command)
    if any(a in ("--help", "-h", "--helpfull") for a in argv):
        print(__doc__)
        print(fv.get_help())
        sys.exit(0)
    try:
        rest = fv(["python -m sam_jax.reproduce"] + argv)
    except flags.Error as e:
        raise BadInput(f"{command}: {cli.one_line(e)}") from None
    if len(rest) > 1:
        raise BadInput(f"{command}: unexpected argument {rest[1]!r}")
    if fv["table"].value and fv["sweep"].value:
        raise BadInput("give --table or --sweep, not both")
    return types.SimpleNamespace(command=command,
                                 **{name: fv[name].value for name in fv})


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
    if args.sweep:
        table = reproduce.load_sweep(args.sweep, args.seeds, args.base_config)
    else:
        table = reproduce.load_table(args.table, args.seeds)
    if args.rows:
        try:
            table = registry.select_rows(table, args.rows.split(","))
        except KeyError as e:
            raise BadInput(e.args[0]) from None
    root = _absolute_root(args.root)
    _check_paths(args, root)
    return table, root


def _check_paths(args, root: str) -> None:
    """The paths the command will read or write, checked before it starts."""
    if args.command == "collect" and args.format not in FORMATS:
        raise BadInput(f"unknown format {args.format!r}; allowed: {', '.join(FORMATS)}")
    if "://" in root:  # cloud storage: the runs themselves check it
        return
    if os.path.exists(root) and not os.path.isdir(root):
        raise BadInput(f"--root={args.root} is a file, not a directory")
    if args.command == "collect" and not os.path.isdir(root):
        raise BadInput(f"--root={args.root} does not exist: nothing to collect "
                       "(give the --root the runs were launched with)")
    plot = getattr(args, "plot", None)
    if plot:
        directory = os.path.dirname(os.path.abspath(plot))
        if not os.path.isdir(directory):
            raise BadInput(f"--plot={plot}: directory {directory!r} does not exist")


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
    if args.sweep:  # every point checked before the first starts
        preflight.check_runs(runs, root)
    index, count = _shard(args.shard)
    if (index, count) != (0, 1):
        if args.launcher != "local":
            raise BadInput(f"--shard={args.shard} is for --launcher=local only")
        runs = runs[index::count]
    if args.launcher == "local":
        outcomes = launchers.launch_local(runs, root, declarations.launch_directory(),
                                           dry_run=args.dry_run)
        counts = {}
        for outcome in outcomes.values():
            counts[outcome] = counts.get(outcome, 0) + 1
        print(f"{table.name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        not_done = set(counts) - {"done", "skipped", "would run"}
        return EXIT_SOME_RUNS_NOT_DONE if not_done or len(outcomes) < len(runs) else 0
    if args.launcher == "slurm":
        return launch_slurm(table, root, runs, args)
    return launch_tpu(root, runs, args)


def _shard(text: str) -> tuple[int, int]:
    """--shard=I/N as (I, N), or BadInput."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise BadInput(f"--shard={text!r} must be I/N with 0 <= I < N, e.g. 0/2")
    return index, count


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
                                    declarations.launch_directory(), slurm_dir,
                                    options)
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
    try:
        return subprocess.run(submit).returncode
    except FileNotFoundError:  # not a SLURM machine: what was written still serves
        print(f"error: sbatch is not on this machine's PATH, so nothing was submitted; "
              f"{script_path} and {commands_path} are written and complete: run "
              f"`{shlex.join(submit)}` on a SLURM login node", file=sys.stderr, flush=True)
        return EXIT_SOME_RUNS_NOT_DONE


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


FORMATS = ("markdown", "summary", "csv")


def collect_command(table, root, args) -> int:
    try:
        cells, statuses = collect.collect_table(table, root,
                                                running_window_s=args.running_window_s)
    except ValueError as e:  # a damaged run_outputs.jsonl
        raise BadInput(str(e)) from None
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
        args = _parse(sys.argv[1:] if argv is None else argv)
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
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `plan ... | head` ends quietly
    sys.exit(main())
