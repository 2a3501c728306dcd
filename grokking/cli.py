"""The ``grokking`` command. Every ``train`` flag is generated from :class:`~grokking.config.Config`.

Precedence: defaults < ``--preset`` < ``--config FILE`` < flags. Errors in input are one
line on stderr with exit status 2, and nothing is written before the input is valid.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from .config import FIELDS, PRESETS, Config, ConfigError, field_type, from_dict, load_file, markdown_table, preset


class UsageError(Exception):
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


# --- commands ------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from .train import Trainer

    if args.resume:
        from .train import BUDGET_FIELDS

        given = [flag(n) for n in FIELDS if hasattr(args, n) and n not in BUDGET_FIELDS] + \
                (["--config"] if args.config else []) + (["--preset"] if args.preset else []) + \
                (["--overwrite"] if args.overwrite else [])
        if given:
            raise UsageError(f"grokking train: --resume takes its config from the run; drop {', '.join(given)} "
                             f"(only {', '.join(flag(n) for n in BUDGET_FIELDS)} may change)")
        budget = {n: getattr(args, n) for n in BUDGET_FIELDS if hasattr(args, n)}
        trainer = Trainer.resume(args.resume, budget, progress=not args.quiet)
    else:
        if args.out is not None and not args.out.strip():
            raise UsageError("out: must be a directory path, got ''")
        cfg = config_from_args(args)
        out = Path(args.out) if args.out else default_out(cfg)
        from .train import prepare_run_dir, resolve_device

        resolve_device(cfg.device)  # refuse an unavailable device before touching the disk
        if out.exists() and not out.is_dir():
            raise UsageError(f"out: {out} exists and is not a directory")
        if out.exists() and any(out.iterdir()) and not args.overwrite:
            prepare_run_dir(out, overwrite=False)  # raises the one-line refusal
        trainer = Trainer(cfg, out, progress=not args.quiet)
    summary = trainer.run(overwrite=args.overwrite)
    print(json.dumps({"out": str(trainer.out), **summary}, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .fast import last_position_logits, unsupported_reason, hooked_last_position_logits
    from .train import evaluate

    overrides = {k: getattr(args, k) for k in ("op", "frac", "seed") if getattr(args, k) is not None}
    loaded = load_model(args.checkpoint, **overrides)
    fn = last_position_logits if unsupported_reason(loaded.cfg) is None else hooked_last_position_logits
    figures = evaluate(loaded.model, loaded.dataset, fn, loaded.cfg)
    result = {**figures, "epoch": loaded.meta.get("epoch"), "checkpoint": str(loaded.path)}
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:12s} {value}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    path = Path(args.run)
    if (path / "results.csv").exists():  # a sweep directory (grokking sweep)
        from .sweep import plot_sweep

        print("\n".join(str(figure) for figure in plot_sweep(path)))
        return 0
    if (path / "metrics.jsonl").exists():
        from .plots import plot_run

        try:
            print(plot_run(path))
        except (OSError, ValueError, KeyError, TypeError) as err:  # a damaged config.json or metrics.jsonl
            raise UsageError(f"plot: cannot read the run in {path} ({type(err).__name__})") from None
        return 0
    raise UsageError(f"plot: {path} is not a run or sweep directory (no metrics.jsonl or results.csv)")


def cmd_ops(args: argparse.Namespace) -> int:
    from .data import OPERATIONS

    for name, op in OPERATIONS.items():
        print(f"{name:10s} {op.formula}{'   (needs prime p)' if op.needs_prime else ''}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.markdown:
        print(markdown_table())
        return 0
    print(json.dumps(config_from_args(args).to_dict(), indent=2))
    return 0


def build_parser() -> Parser:
    parser = Parser(prog="grokking", description="Reproduce and study grokking on modular arithmetic.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p_train = sub.add_parser("train", help="train one run", description="Train one run into a run directory.",
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    p_train.add_argument("--config", help="TOML or JSON file of config fields")
    p_train.add_argument("--preset", choices=sorted(PRESETS), help="named published setting (see docs)")
    p_train.add_argument("--out", help="run directory (default: runs/<op>_p<p>_frac<frac>_seed<seed>_<hash>)")
    p_train.add_argument("--overwrite", action="store_true", help="replace a non-empty run directory")
    p_train.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint; with --epochs N (or another budget "
                         "flag: --max-steps, --stop-at-test-acc, --stop-at-test-loss) extend it")
    p_train.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(p_train)
    p_train.set_defaults(func=cmd_train)

    p_eval = sub.add_parser("eval", help="losses and accuracies of a checkpoint")
    p_eval.add_argument("checkpoint", help="run directory, .safetensors checkpoint, or the seed's .pth")
    p_eval.add_argument("--json", action="store_true", help="print one JSON object")
    p_eval.add_argument("--op", default=None, help="operation (seed files do not record it; default add)")
    p_eval.add_argument("--frac", type=float, default=None, help="split fraction for seed files without a split")
    p_eval.add_argument("--seed", type=int, default=None, help="split seed for seed files without a split")
    p_eval.set_defaults(func=cmd_eval)

    p_plot = sub.add_parser("plot", help="redraw the figures of a run or sweep directory")
    p_plot.add_argument("run")
    p_plot.set_defaults(func=cmd_plot)

    p_ops = sub.add_parser("ops", help="list the operations")
    p_ops.set_defaults(func=cmd_ops)

    p_config = sub.add_parser("config", help="print the resolved config (or the field reference)")
    p_config.add_argument("--markdown", action="store_true", help="print the field table of docs/config.md")
    p_config.add_argument("--config", help="TOML or JSON file of config fields")
    p_config.add_argument("--preset", choices=sorted(PRESETS))
    add_config_flags(p_config)
    p_config.set_defaults(func=cmd_config)

    # Commands owned by other modules: each defines add_cli(subparsers).
    import importlib

    for module in PLUGIN_MODULES:
        try:
            mod = importlib.import_module(f"grokking.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"grokking.{module}":
                raise
            continue
        if hasattr(mod, "add_cli"):
            mod.add_cli(sub)
    return parser


PLUGIN_MODULES = ("analysis", "sweep", "report", "bench", "batched", "interop")


def one_line(err: BaseException) -> str:
    """Error text on one line, whatever the input it quotes holds (newlines in junk arguments)."""
    return " ".join(str(err).splitlines())


def main(argv: Sequence[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .train import RunDirError, TrainingFailed, TrainingInterrupted

    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UsageError, ConfigError, RunDirError, CheckpointError) as err:
        print(f"grokking: error: {one_line(err)}", file=sys.stderr)
        return 2
    except TrainingFailed as err:
        print(f"grokking: run failed: {one_line(err)}", file=sys.stderr)
        return 1
    except TrainingInterrupted as err:
        print(f"grokking: {one_line(err)}", file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        print("grokking: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `grokking ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
