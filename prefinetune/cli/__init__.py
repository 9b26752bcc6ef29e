"""`prefinetune`, the one command line: subcommands pretrain (the default), prepare, finetune, compare,
export, push, task-folders, predict, report, study and transfer-study (`prefinetune --help` lists them;
each has its own --help).
The launch/ and data_prep/ scripts are thin shims over it, for `ray job submit` and habit.

    python launch/local_cpu.py                                   # embedded default: offline, 2 CPU workers
    python launch/local_cpu.py --recipe recipes/shared_data_cpu.yaml --data-dir ../shared/data
    python launch/muppet_64gpu.py --recipe recipes/X.yaml --num-workers 8 train.updates=1000
    prefinetune finetune --recipe recipes/finetune/rte.yaml --data-dir ../shared/data --model runs/X/export
    prefinetune compare --recipe recipes/finetune/rte.yaml --models BASE CANDIDATE --fractions 0.1,1.0 --seeds 3

`prefinetune` alone (or `prefinetune pretrain`) pre-finetunes; the others are in prefinetune/cli/<name>.py.

Flags are shorthands for overrides; any recipe key can be overridden as `section.key=value`
(value parsed as YAML, e.g. `tasks.0.label_names=[no,yes]`).
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from prefinetune.cli.common import flag_overrides, input_errors, make_parser
from prefinetune.recipe.config import RecipeError, load_recipe
from prefinetune.run.console import say
from prefinetune.run.errors import RunFailed, RunInterrupted

__all__ = ["main", "pretrain_main", "finetune_main", "SUBCOMMANDS"]

SUBCOMMANDS = {     # name -> (module, its main, what it does)
    "pretrain": ("prefinetune.cli", "pretrain_main", "pre-finetune on a recipe's task mixture (the default)"),
    "prepare": ("prefinetune.cli.prepare", "main", "tokenize a recipe's tasks into Arrow shards, no training"),
    "finetune": ("prefinetune.cli", "finetune_main", "fine-tune a model or an export on one task"),
    "compare": ("prefinetune.cli.compare", "compare_main", "models x fractions x seeds on Ray Tune, a table"),
    "export": ("prefinetune.cli.export", "main", "a run's checkpoint -> Hugging Face folder (-> hub)"),
    "push": ("prefinetune.cli.export", "push_main", "an export folder -> a hub model repo"),
    "task-folders": ("prefinetune.cli.export", "task_folders_main", "stock per-task folders added to an export"),
    "predict": ("prefinetune.cli.predict", "main", "an export's predictions on a split (+ GLUE/SuperGLUE files)"),
    "report": ("prefinetune.cli.report", "main", "a run's task similarity, loss curves and task mix"),
    "study": ("prefinetune.cli.study", "main", "the held-out study (pre-finetune, then compare)"),
    "transfer-study": ("prefinetune.cli.transfer_study", "main",
                       "the transfer study: pre-finetune, then the six-task panel paired by seed"),
}


def subcommands_help() -> str:
    lines = ["subcommands (prefinetune SUBCOMMAND --help for each):"]
    lines += [f"  {name:<13} {what}" for name, (_, _, what) in SUBCOMMANDS.items()]
    return "\n".join(lines + ["", "`prefinetune [options]` with no subcommand is `prefinetune pretrain [options]`."])


def main(argv: list[str] | None = None, default_recipe: str | None = None,
         description: str = "prefinetune: multi-task pre-finetuning on Ray + DeepSpeed") -> int:
    """`prefinetune [SUBCOMMAND] ...`; the launch scripts call it with their default recipe."""
    import importlib

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS and argv[0] != "pretrain":
        module, function, _ = SUBCOMMANDS[argv[0]]
        return getattr(importlib.import_module(module), function)(argv[1:])
    if argv and argv[0] == "pretrain":
        return pretrain_main(argv[1:], default_recipe, description, prog="prefinetune pretrain")
    prog = None if default_recipe else "prefinetune"        # a launch script keeps its own name
    return pretrain_main(argv, default_recipe, description, prog=prog, epilog=subcommands_help())


def pretrain_main(argv: list[str] | None = None, default_recipe: str | None = None,
                  description: str = "prefinetune pretrain: multi-task pre-finetuning on Ray + DeepSpeed",
                  prog: str | None = "prefinetune pretrain", epilog: str | None = None) -> int:
    args = make_parser(default_recipe, description, prog, epilog).parse_args(argv)
    return _run(args)


def finetune_main(argv: list[str] | None = None) -> int:
    """`prefinetune finetune`: one downstream task from a plain model or an export (recipes/finetune/)."""
    args = make_parser(None, "prefinetune finetune: fine-tune a model or a prefinetune export on one task "
                       "(a recipe with a finetune: section, e.g. recipes/finetune/rte.yaml)",
                       prog="prefinetune finetune", epilog=finetune_keys_help()).parse_args(argv)
    return _run(args, needs_finetune=True)


def finetune_keys_help() -> str:
    """The recipe keys a fine-tuning recipe adds (the finetune: section), from the schema's own text."""
    from prefinetune.recipe.config import FinetuneSection

    lines = ["recipe keys of the finetune: section (override as finetune.KEY=VALUE):"]
    for name, field in FinetuneSection.model_fields.items():
        lines.append(f"  finetune.{name} (default {field.get_default(call_default_factory=True)!r}): "
                     f"{field.description or ''}")
    lines.append("--updates N (train.updates) and finetune.epochs are exclusive: give finetune.epochs=null with it.")
    return "\n".join(lines)


def _stop_on_sigterm(received: list) -> None:
    """SIGTERM (a scheduler's stop) ends the run as Ctrl-C does: with the line that says how to resume."""
    def on_term(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)


def _report(run_dir: str, rows: int) -> None:
    """RUN_DIR/report/ at the end of a pre-finetuning run (diagnostics.report), best-effort: a failure warns."""
    from prefinetune.run.best_effort import best_effort

    def write(run_dir: str, rows: int):
        import torch

        from prefinetune.report.build import write_report

        device = "cuda" if torch.cuda.is_available() else "cpu"      # the driver's GPU, where it has one
        return write_report(run_dir, max_rows=rows or None, device=device)

    written = best_effort("the report", write, run_dir, rows)
    if written:
        out, notes = written
        for note in notes:
            say(f"[prefinetune] report: {note}")
        say(f"[prefinetune] report: {out} (prefinetune report {run_dir} writes it again)")


def _run(args: argparse.Namespace, needs_finetune: bool = False) -> int:
    from prefinetune.run.driver import prepare_data, resolve_paths, run

    received: list = []
    _stop_on_sigterm(received)
    try:
        recipe = load_recipe(args.recipe, flag_overrides(args))
        if needs_finetune and recipe.finetune is None:
            raise RecipeError(f"recipe {args.recipe} has no finetune: section; fine-tuning recipes are in "
                              "recipes/finetune/ (pre-finetuning: prefinetune --recipe ...)")
        if args.prepare_only:
            prepare_data(resolve_paths(recipe))
        else:
            from prefinetune.finetune.hooks import hooks_for

            result = run(recipe, args.resume_from, source=args.recipe, hooks=hooks_for(recipe))
            if recipe.finetune is None and recipe.diagnostics.report:
                _report(result["run_dir"], recipe.diagnostics.report_rows)
    except input_errors() as err:
        say(f"error: {err}", sys.stderr)
        return 2
    except RunFailed as err:         # a worker stopped the run and said why (non-finite loss, disk full)
        say(f"error: the run stopped: {err}", sys.stderr)
        return 1
    except (RunInterrupted, KeyboardInterrupt) as err:
        where = str(err) if isinstance(err, RunInterrupted) else "before training started; nothing to resume"
        say(f"[prefinetune] interrupted: {where}", sys.stderr)
        return 128 + (received[0] if received else signal.SIGINT)
    return 0
