"""The ``grokking`` command, every subcommand of it, on top of the library.

Every ``train`` flag is generated from :class:`~grokking.config.Config`. Precedence: defaults <
``--preset`` < ``--config FILE`` < flags. Library code raises :class:`~grokking.errors.GrokkingError`
subclasses; here they become one line on stderr and their exit status (2 for input refused,
before anything is written; 1 for a run that failed; 128 + N for signal N). Nothing imports
this module.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from . import bench as bench_module
from .analysis import analyze
from .batched import CPU_STRATEGY, STRATEGIES, train_grid
from .bench import find_reference, format_result, run_bench
from .checkpoint import load_model
from .config import FIELDS, PRESETS, Config, field_type, from_dict, load_file, markdown_table, preset
from .data import OPERATION_ALIASES, OPERATIONS, TOKEN_TASKS
from .engine import evaluate
from .errors import GrokkingError, InputError
from .factory import MODELS
from .fast import select_logits_fn
from .figures import plot_run
from .memory import resolve_device
from .report import MAX_POINTS, write_report
from .reproduce import EXPERIMENTS, SCALES, list_text, reproduce
from .rundir import (
    CONFIG,
    METRICS,
    RESULTS,
    RunDirError,
    StorageError,
    check_out_dir,
    check_writable_parent,
    is_sweep_dir,
    load_json,
    os_error_text,
    run_holder,
)
from .sweep import (
    BACKENDS,
    BUSY,
    BackendOptions,
    SlurmOptions,
    SweepPlan,
    check_axes,
    check_backend,
    import_modules,
    load_sweep_file,
    parse_grid_flags,
    plan_sweep,
    plot_sweep,
    run_state,
    run_sweep,
)
from .train import RESUME_FIELDS, Trainer
from .version import __version__


class UsageError(InputError):
    """Bad command-line input; the message is one line."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        raise UsageError(f"{self.prog}: {message}")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Config field, grouped; unset flags stay out of the namespace."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, f in FIELDS.items():
        meta = f.metadata
        group = groups.setdefault(meta["group"], parser.add_argument_group(f"{meta['group']} (config fields)"))
        default = f.default
        help_text = f"{meta['help']} (default: {default})".replace("%", "%%")
        if field_type(name) is bool:
            group.add_argument(flag(name), dest=name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            metavar = "{" + ",".join(meta["choices"]) + "}" if meta["choices"] else field_type(name).__name__.upper()
            group.add_argument(flag(name), dest=name, default=argparse.SUPPRESS, metavar=metavar, help=help_text)


def config_from_args(args: argparse.Namespace) -> Config:
    values: dict[str, Any] = {}
    if getattr(args, "preset", None):
        values.update(preset(args.preset))
    if getattr(args, "config", None):
        values.update(load_file(args.config))
    values.update({name: getattr(args, name) for name in FIELDS if hasattr(args, name)})
    return from_dict(values)


def default_out(cfg: Config) -> Path:
    return Path("runs") / f"{cfg.op}_p{cfg.p}_frac{cfg.frac:g}_seed{cfg.seed}_{cfg.key()}"


# --- train, eval, plot, ops, config ----------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    if args.resume:
        given = [flag(n) for n in FIELDS if hasattr(args, n) and n not in RESUME_FIELDS] + \
                (["--config"] if args.config else []) + (["--preset"] if args.preset else []) + \
                (["--overwrite"] if args.overwrite else [])
        if given:
            raise UsageError(f"grokking train: --resume takes its config from the run; drop {', '.join(given)} "
                             f"(only {', '.join(flag(n) for n in RESUME_FIELDS)} may change)")
        budget = {n: getattr(args, n) for n in RESUME_FIELDS if hasattr(args, n)}
        trainer = Trainer.resume(args.resume, budget, progress=not args.quiet)
    else:
        if args.out is not None and not args.out.strip():
            raise UsageError("out: must be a directory path, got ''")
        cfg = config_from_args(args)
        out = Path(args.out) if args.out else default_out(cfg)
        resolve_device(cfg.device)  # refuse an unavailable device before touching the disk
        check_out_dir(out, args.overwrite)
        trainer = Trainer(cfg, out, progress=not args.quiet)
    summary = trainer.run(overwrite=args.overwrite)
    print(json.dumps({"out": str(trainer.out), **summary}, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    overrides = {k: getattr(args, k) for k in ("op", "frac", "seed") if getattr(args, k) is not None}
    loaded = load_model(args.checkpoint, **overrides)
    figures = evaluate(loaded.model, loaded.dataset, select_logits_fn(loaded.cfg.replace(fast=True))[0], loaded.cfg)
    result = {**figures, "epoch": loaded.meta.get("epoch"), "checkpoint": str(loaded.path)}
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:12s} {value}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    path = Path(args.run)
    if is_sweep_dir(path):
        try:
            print("\n".join(str(figure) for figure in plot_sweep(path)))
        except OSError as err:
            raise StorageError(f"plot: cannot write {os_error_text(err)}") from None
        return 0
    if (path / METRICS).exists():
        try:
            load_json(path / CONFIG)  # missing, unreadable (and why) or damaged: said as such
        except RunDirError as err:
            raise UsageError(f"plot: cannot read the run in {path}: {err}") from None
        try:
            print(plot_run(path))
        except OSError as err:  # the figure could not be written (the run's files were read)
            raise StorageError(f"plot: cannot write {os_error_text(err)}") from None
        except (ValueError, KeyError, TypeError) as err:  # a config.json or metrics.jsonl without a needed field
            raise UsageError(f"plot: cannot read the run in {path} ({type(err).__name__})") from None
        return 0
    raise UsageError(f"plot: {path} is not a run or sweep directory (no metrics.jsonl or {RESULTS})")


def cmd_ops(args: argparse.Namespace) -> int:
    aliases = {name: alias for alias, name in OPERATION_ALIASES.items()}
    print("binary tables (inputs 'a b =', one answer token):")
    for name, op in OPERATIONS.items():
        also = f"   (--op {aliases[name]!r} too)" if name in aliases else ""
        print(f"{name:10s} {op.formula}{'   (needs prime p)' if op.needs_prime else ''}{also}")
    print("\nsequence tasks (inputs 'x_1 .. x_L =', L answer tokens; --seq-len L, p symbols), "
          "sparse parity (--parity-bits, --parity-k, --n-examples), images (model mlp only):")
    for name, task in TOKEN_TASKS.items():
        print(f"{name:10s} [{task.kind}] {task.formula}")
    print("\nmodels (--model):")
    for name, what in MODELS.items():
        print(f"{name:10s} {what}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.markdown:
        print(markdown_table())
        return 0
    print(json.dumps(config_from_args(args).to_dict(), indent=2))
    return 0


# --- analyze, report, bench ------------------------------------------------------------------------
def cmd_analyze(args: argparse.Namespace) -> int:
    if args.out is not None:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UsageError(f"analyze: --out {out} exists and is not a directory")
        check_writable_parent(out / "analysis.json", "analyze: --out")
    try:
        result = analyze(args.path, args.out)
    except OSError as err:  # the analysis could not be written (its input was read: load_model says otherwise)
        raise StorageError(f"analyze: cannot write {os_error_text(err)}") from None
    keys = result["key_frequencies"]
    brief = {name: {"freqs": keys[name]["freqs"], "explained": round(keys[name]["explained"], 4)}
             for name in ("embedding", "neuron_logit")}
    print(json.dumps({"out_dir": result["out_dir"], "key_frequencies": {**brief, "used": keys["used"]},
                      "measures": result.get("measures"), "phases": result.get("phases")}, indent=1, default=str))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    if args.max_points < 10:
        raise UsageError(f"report: --max-points must be >= 10; got {args.max_points}")
    try:
        print(write_report(args.path, args.max_points, run_reports=args.runs))
    except OSError as err:
        raise StorageError(f"report: {os_error_text(err)}") from None
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    reference = None if args.no_reference else find_reference(args.reference)
    result = run_bench(cfg, args.timed_epochs, args.reps, reference, args.grok,
                       transformer_lens=not args.no_transformer_lens, background=args.background_load)
    print(json.dumps(result) if args.json else format_result(result))
    return 0


# --- batch and sweep ---------------------------------------------------------------------------------
def parse_grid(entries: Sequence[str]) -> list[dict[str, str]]:
    """``["seed=0,1", "lr=1e-3,3e-3"]`` -> the cartesian product as override dicts (in order)."""
    axes = parse_grid_flags(entries)
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def cmd_batch(args: argparse.Namespace) -> int:
    base = config_from_args(args)
    grid = parse_grid(args.grid or [])
    cfgs = [base.replace(**overrides) for overrides in grid]
    manifest = train_grid(cfgs, grid, args.out, strategy=args.strategy, overwrite=args.overwrite,
                          progress=not args.quiet, grid_flags=args.grid or [])
    print(json.dumps(manifest, indent=2))
    return 1 if any(r["status"] == "failed" for r in manifest["runs"]) else 0


def plan_from_args(args: argparse.Namespace) -> SweepPlan:
    """Merge defaults, preset, --config, the sweep file and the flags (see docs/sweeps.md)."""
    file = load_sweep_file(args.sweep_file) if args.sweep_file else {}
    flags = {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}
    cli_grid = parse_grid_flags(args.grid or [])
    both = [name for name in cli_grid if name in flags]
    if both:
        raise UsageError(f"grokking sweep: {both[0]} is both fixed ({flag(both[0])}) and swept (--grid)")
    fixed: dict[str, Any] = {"report": False}  # a sweep writes no report.html per run unless asked
    chosen_preset = args.preset or file.get("preset")
    if chosen_preset:
        fixed.update(preset(chosen_preset))
    if args.config:
        fixed.update(load_file(args.config))
    fixed.update(file.get("fixed", {}))
    fixed.update(flags)
    file_grid = check_axes(file.get("grid", {}), "grid")
    grid = {name: values for name, values in file_grid.items() if name not in flags}  # a flag fixes the axis
    grid.update(cli_grid)
    runs = [{k: v for k, v in entry.items() if k.replace("-", "_") not in flags} if isinstance(entry, dict) else entry
            for entry in file.get("runs", [])]
    if not args.out or not str(args.out).strip():
        raise UsageError("grokking sweep: --out must be a directory path")
    return plan_sweep(args.out, fixed, grid, runs)


def cmd_sweep(args: argparse.Namespace) -> int:
    imports = tuple(args.imports or ())
    try:
        import_modules(imports)
    except ImportError as err:
        raise UsageError(f"grokking sweep: --import {err.name or ''}: {err}") from None
    plan = plan_from_args(args)
    for option, value in (("--workers", args.workers), ("--time", args.time), ("--cpus-per-task", args.cpus_per_task)):
        if value is not None and value <= 0:
            raise UsageError(f"grokking sweep: {option} must be positive; got {value}")
    slurm = SlurmOptions(partition=args.partition, time_min=args.time or 60, local=args.slurm_local)
    if args.heatmap:
        fields = [f.strip().replace("-", "_") for f in args.heatmap.split(",")]
        if len(fields) != 2 or any(f not in FIELDS for f in fields):
            raise UsageError(f"grokking sweep: --heatmap takes two config fields X,Y; got {args.heatmap!r}")
    else:
        fields = None
    if args.dry_run:
        options = BackendOptions(plan.out, workers=args.workers, imports=imports, threads=args.cpus_per_task,
                                 address=args.address, slurm=slurm)
        check_backend(plan, args.backend, options, [p for p in plan.points if run_state(p.run_dir) != "done"])
        for point in plan.points:
            state = "running" if run_holder(point.run_dir) is not None else run_state(point.run_dir)
            print(f"{state:9s} {point.run_dir}")
        return 0
    log = (lambda msg: None) if args.quiet else None
    rows = run_sweep(plan, args.backend, workers=args.workers, imports=imports, address=args.address, slurm=slurm,
                     threads=args.cpus_per_task, heatmap_fields=fields, log=log)
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row["status"]] += 1
    if not args.no_sweep_report:
        try:
            write_report(plan.out)
        except OSError as err:
            raise StorageError(f"report: {os_error_text(err)}") from None
    print(json.dumps({"out": str(plan.out), "results": str(plan.out / RESULTS), "runs": len(rows),
                      "statuses": dict(counts)}, indent=2))
    held = [row for row in rows if row["status"] == BUSY]
    if held:  # another process trains them: this sweep did not finish them
        print(f"grokking: {len(held)} run(s) are being trained by another process ({held[0]['error']}); "
              f"run the sweep again once they end", file=sys.stderr)
    return 1 if counts.get("failed") or counts.get("crashed") or held else 0


# --- reproduce ---------------------------------------------------------------------------------------
def cmd_reproduce(args: argparse.Namespace) -> int:
    if args.list:
        print(list_text())
        return 0
    if args.name is None:
        raise UsageError(f"grokking reproduce: give NAME ({', '.join(EXPERIMENTS)}) or --list")
    if args.paper_scale and args.scale != "laptop":
        raise UsageError("grokking reproduce: --paper-scale and --scale are exclusive")
    scale = "paper" if args.paper_scale else args.scale
    try:
        result = reproduce(args.name, args.out, scale, threads=args.threads, quiet=args.quiet, workers=args.workers)
    except OSError as err:
        raise StorageError(f"reproduce: {os_error_text(err)}") from None
    print(result["markdown"])
    out = Path(result["figure"]).parent
    print(f"figure: {result['figure']}\ntable: {out / 'reproduce.md'}\nresults: {out / 'reproduce.json'}\n"
          f"runs: {len(result['trained'])} trained, {len(result['reused'])} reused; {result['wall_seconds']:g} s")
    return 0


# --- the parser ----------------------------------------------------------------------------------------
def build_parser() -> Parser:
    parser = Parser(prog="grokking", description="Reproduce and study grokking on modular arithmetic.")
    parser.add_argument("--version", action="version", version=f"grokking {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("train", help="train one run", description="Train one run into a run directory.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="TOML or JSON file of config fields")
    p.add_argument("--preset", choices=sorted(PRESETS), help="named published setting (see docs)")
    p.add_argument("--out", help="run directory (default: runs/<op>_p<p>_frac<frac>_seed<seed>_<hash>)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty run directory")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint; with --epochs N (or another "
                   "budget flag: --max-steps, --stop-at-test-acc, --stop-at-test-loss) extend it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="losses and accuracies of a checkpoint")
    p.add_argument("checkpoint", help="run directory, .safetensors checkpoint, or the seed's .pth")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--op", default=None, help="operation (seed files do not record it; default add)")
    p.add_argument("--frac", type=float, default=None, help="split fraction for seed files without a split")
    p.add_argument("--seed", type=int, default=None, help="split seed for seed files without a split")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("plot", help="redraw the figures of a run or sweep directory")
    p.add_argument("run")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("ops", help="list the operations")
    p.set_defaults(func=cmd_ops)

    p = sub.add_parser("config", help="print the resolved config (or the field reference)")
    p.add_argument("--markdown", action="store_true", help="print the field table of docs/config.md")
    p.add_argument("--config", help="TOML or JSON file of config fields")
    p.add_argument("--preset", choices=sorted(PRESETS))
    add_config_flags(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("analyze", help="Fourier analysis and progress measures of a run or checkpoint",
                       description=analyze.__doc__)
    p.add_argument("path", help="run directory, .safetensors checkpoint, or the seed's .pth")
    p.add_argument("--out", default=None, help="output folder (default: RUN/analysis/ or <checkpoint>_analysis/)")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser(
        "sweep", help="train a grid of runs (idempotent; sequential, process pool, batched, Ray or Slurm)",
        description="Train every point of the grid into DIR/runs/<name>_<config key>, then write DIR/results.csv "
                    "and the sweep figures. Running it again skips finished runs and continues interrupted ones. "
                    "Train flags fix a field for every point. See docs/sweeps.md.")
    p.add_argument("--out", required=True, metavar="DIR", help="sweep directory")
    p.add_argument("--grid", action="append", metavar="FIELD=V1,V2,...",
                   help="a config field and its values; repeat for a cartesian product")
    p.add_argument("--sweep-file", metavar="FILE", help="TOML file with [fixed] fields, [grid] lists, [[runs]] points")
    p.add_argument("--config", help="TOML or JSON file of config fields (fixed for every point)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="named published setting (see docs/sweeps.md)")
    p.add_argument("--backend", choices=list(BACKENDS), default="sequential",
                   help="where the runs train (default: sequential)")
    p.add_argument("--workers", type=int, default=None,
                   help="process: pool size (default: CPU count); ray: CPUs of a local instance; "
                        "slurm: array parallelism")
    p.add_argument("--address", default=None,
                   help="ray: cluster address ('auto', 'ray://HOST:10001'); default: start a local instance")
    p.add_argument("--partition", default=None, help="slurm: partition")
    p.add_argument("--time", type=int, default=None, metavar="MIN",
                   help="slurm: time limit per run in minutes (default 60)")
    p.add_argument("--cpus-per-task", type=int, default=None,
                   help="CPUs (and torch threads) per run (default: 1 for slurm, ray and process workers; "
                        "torch's own choice for sequential and batched)")
    p.add_argument("--slurm-local", action="store_true",
                   help="slurm: run the jobs on this machine (submitit's local executor)")
    p.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                   help="import MODULE first, here and in every worker (its register_operation calls add tasks)")
    p.add_argument("--heatmap", metavar="X,Y", help="the two fields of the heat map (default: the two swept most)")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything, list the runs and their state, train nothing")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--no-sweep-report", action="store_true", help="do not write DIR/report.html at the end")
    add_config_flags(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser(
        "report", help="write a self-contained report.html for a run or a sweep",
        description="Write RUN_OR_SWEEP/report.html: one self-contained page (no network needed) with the "
                    "curves, summary, config and analysis of a run, or the results table and figures of a sweep.")
    p.add_argument("path", metavar="RUN_OR_SWEEP", help="a run directory or a sweep directory")
    p.add_argument("--max-points", type=int, default=MAX_POINTS,
                   help=f"most metrics points per chart; longer runs are downsampled (default {MAX_POINTS})")
    p.add_argument("--runs", action="store_true",
                   help="for a sweep: also write every run's own report.html, linked from the table")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("bench", help="time our loop against the seed's, TransformerLens's and the matmul floor",
                       description=bench_module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timed-epochs", type=int, default=40, help="timed epochs per repetition for ours and the floor "
                   "(the seed loop and TransformerLens run a quarter of them, at least 5) (default: 40)")
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions; medians are reported (default: 5)")
    p.add_argument("--reference", help="another seed-loop script to time, e.g. ../shared/reference/seed_reference.py "
                   "(default: the packaged grokking.seed_loop)")
    p.add_argument("--no-reference", action="store_true", help="skip the seed loop")
    p.add_argument("--no-transformer-lens", action="store_true", help="skip the TransformerLens peer")
    p.add_argument("--background-load", type=int, default=0, metavar="K",
                   help="start K busy processes for the duration of the bench, to time beside busy neighbours "
                        "(default: 0)")
    p.add_argument("--grok", action="store_true", help="also time the canonical run to 99%% test accuracy")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--preset", help=argparse.SUPPRESS)
    add_config_flags(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "batch", help="train a grid of runs (seeds, lr, wd, frac ...) in one process, stacked on a GPU",
        description="Train every combination of the --grid values in one process; each run gets an ordinary "
                    "run directory DIR/runs/FIELD=VALUE_... (resumable alone with grokking train --resume). "
                    "Other flags fix a field for every run.")
    p.add_argument("--out", required=True, help="batch directory: runs go to OUT/runs/, the manifest to OUT/batch.json")
    p.add_argument("--grid", action="append", metavar="FIELD=V1,V2,...",
                   help="a config field and its values; repeat for a cartesian product")
    p.add_argument("--strategy", choices=STRATEGIES, default="auto",
                   help=f"stacked: one model with a leading run dimension, one pass for all runs; separate: each run "
                        f"its own model, stepped in turn (nothing batched; 'loop' is its former name); auto: stacked "
                        f"on cuda, {CPU_STRATEGY} on cpu (measured faster there)")
    p.add_argument("--config", help="TOML or JSON file of config fields")
    p.add_argument("--preset", choices=sorted(PRESETS), help="named published setting (see grokking train --help)")
    p.add_argument("--overwrite", action="store_true", help="replace non-empty run directories")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(p)
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser(
        "reproduce", help="run a published grokking experiment and compare it with the paper",
        description="Run a published experiment (laptop scale by default), draw the paper's figure from our data "
                    "and print a table: the quantity, the paper's number, ours, the conditions that differ. Writes "
                    "the runs, NAME.png, reproduce.json and reproduce.md into --out; run again, it reuses finished "
                    "runs. See docs/reproduce.md.")
    p.add_argument("name", nargs="?", choices=list(EXPERIMENTS), metavar="NAME",
                   help=f"one of {', '.join(EXPERIMENTS)}")
    p.add_argument("--list", action="store_true", help="list the experiments, their papers and laptop wall times")
    p.add_argument("--out", default=None, metavar="DIR", help="output directory (default: runs/reproduce/NAME)")
    p.add_argument("--paper-scale", action="store_true", help="the paper's scale (its epochs or its sweep)")
    p.add_argument("--scale", choices=SCALES, default="laptop", help=argparse.SUPPRESS)  # smoke: the tests'
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (default 0: the config's choice)")
    p.add_argument("--workers", type=int, default=1,
                   help="power2022: train this many sweep runs at once (process pool; default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or lines")
    p.set_defaults(func=cmd_reproduce)
    return parser


def one_line(err: BaseException) -> str:
    """Error text on one line, whatever the input it quotes holds (newlines in junk arguments)."""
    return " ".join(str(err).splitlines())


def _failed(argv: Sequence[str] | None) -> str:
    """How an exit-status-1 error is introduced: a run failed, or another command did."""
    words = list(sys.argv[1:] if argv is None else argv)
    return "run failed" if any(w in ("train", "batch", "sweep") for w in words[:1]) else "failed"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except GrokkingError as err:
        kind = "error" if err.exit_status == 2 else _failed(argv) if err.exit_status == 1 else None
        print(f"grokking: {kind + ': ' if kind else ''}{one_line(err)}", file=sys.stderr)
        return err.exit_status
    except OSError as err:  # a file-system error that no command turned into its own message
        print(f"grokking: {_failed(argv)}: {one_line(os_error_text(err))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("grokking: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `grokking ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
