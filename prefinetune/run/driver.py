"""The Ray driver of a pre-finetuning run: prepare shards, start W Ray Train workers, export.

    from prefinetune.recipe.config import load_recipe
    from prefinetune.run.driver import run
    run(load_recipe("recipes/local_cpu.yaml"))

Ray: connects to the cluster named by RAY_ADDRESS (as `ray job submit` sets it), else starts a local
Ray in-process. DeepSpeed is imported only inside the workers and by the export, never before
training in the driver.
"""
from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
from pathlib import Path

from prefinetune.data.folders import writable_folder
from prefinetune.recipe.config import RecipeConfig, RecipeError, recipe_from_dict
from prefinetune.run.hooks import RunHooks

__all__ = ["resolve_paths", "writable_folder", "check_backbone", "prepare_data", "train", "export_run", "run",
           "metrics_table", "header", "how_to_load", "write_final_metrics"]


def _absolute(path: str | None) -> str | None:
    if path is None or "://" in path:
        return path
    return str(Path(path).expanduser().resolve())


def resolve_paths(recipe: RecipeConfig) -> RecipeConfig:
    """The recipe with every local path made absolute, so workers in other folders find them."""
    data = recipe.model_dump(mode="json")
    data["run"]["output_dir"] = _absolute(data["run"]["output_dir"])
    data["data"]["root"] = _absolute(data["data"]["root"])
    data["data"]["shards_dir"] = _absolute(data["data"]["shards_dir"])
    if Path(data["model"]["name_or_path"]).exists():
        data["model"]["name_or_path"] = _absolute(data["model"]["name_or_path"])
    return recipe_from_dict(data, "<resolved recipe>")


def check_backbone(recipe: RecipeConfig) -> None:
    """Errors a run would meet only in its workers, found from the backbone's config alone: a task
    whose family needs an encoder-decoder backbone (summarization: BART) on an encoder-only one, CA-MTL's
    conditioning on an encoder-decoder."""
    from transformers import AutoConfig

    from prefinetune.families.family import get_family
    from prefinetune.model.source import resolve_model_source

    m = recipe.model
    try:
        config = AutoConfig.from_pretrained(resolve_model_source(m.name_or_path), revision=m.revision,
                                            trust_remote_code=m.trust_remote_code)
    except (OSError, ValueError) as err:      # a missing folder, a bad hub id, no network, a missing pkg:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RecipeError(f"model.name_or_path={m.name_or_path!r}: no model config can be loaded from it "
                          f"({reason}); give a local folder holding config.json, a hub id (with network), or "
                          "pkg:MODULE/SUBDIR") from None
    needy = [t for t in recipe.tasks if get_family(t.family).needs_encoder_decoder]
    if needy and not getattr(config, "is_encoder_decoder", False):
        raise RecipeError(f"tasks {[t.name for t in needy]} are {needy[0].family}, which needs an encoder-decoder "
                         f"backbone such as BART; model.name_or_path={m.name_or_path!r} is {config.model_type}, "
                         "encoder-only")
    if m.conditioning == "camtl" and getattr(config, "is_encoder_decoder", False):
        raise RecipeError(f"model.conditioning camtl conditions a BERT/RoBERTa-type encoder's layers; "
                          f"model.name_or_path={m.name_or_path!r} is {config.model_type}, an encoder-decoder "
                          "(not supported: CA-MTL's parts are defined on an encoder's attention and layer norms)")


def prepare_data(recipe: RecipeConfig) -> dict:
    """Arrow shards for every task (finished work is reused); returns the manifest."""
    from prefinetune.data.prepare import prepare_tasks
    from prefinetune.model.source import load_tokenizer

    m = recipe.model
    tokenizer = load_tokenizer(m.name_or_path, m.revision, m.trust_remote_code)
    return prepare_tasks(recipe, tokenizer, m.name_or_path)


def _connect_ray() -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        print(f"[prefinetune] ray: connecting to {address}")
        ray.init(address=address, log_to_driver=True)
        return
    # A local Ray gets its dashboard: it serves the State API, which Ray Train's placement-group
    # cleaner polls every second (without it, a warning a second and no clean-up). It also gets a temp
    # folder of its own: two local Rays sharing /tmp/ray (session_latest and the rest) broke the one
    # started first as soon as the second started ("Missing :authority header").
    # Its processes are told where its dashboard is: Ray Train's placement-group cleaner asks the State
    # API whether the controller lives, and without an address it looks for "the" Ray of the machine,
    # failing with "Found multiple active Ray instances" (a traceback every second) beside another Ray.
    temp = tempfile.mkdtemp(prefix="prefinetune-ray-", dir="/tmp")     # short: socket paths have a limit
    port = _free_port()
    print(f"[prefinetune] ray: starting a local Ray (its logs: {temp})")
    ray.init(include_dashboard=True, dashboard_port=port, log_to_driver=True, _temp_dir=temp,
             runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}})


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torch_config(use_gpu: bool):
    """Ray Train's process group: NCCL with gloo beside it on GPUs (prefinetune/distributed/collectives.py),
    gloo on CPU."""
    from ray.train.torch import TorchConfig

    from prefinetune.distributed.collectives import backend_for

    return TorchConfig(backend=backend_for(use_gpu))


def train(recipe: RecipeConfig, resume_from: str | None = None, hooks=None):
    """Run the Ray Train job, from scratch or from a reported checkpoint folder; returns Ray's Result."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer

    from prefinetune.run.controller import controller_callbacks
    from prefinetune.run.errors import RunFailed, RunInterrupted, stop_reason, storage_error
    from prefinetune.run.progress import PROGRESS_FILE, DriverProgress
    from prefinetune.run.worker import train_worker

    s = recipe.scaling
    _connect_ray()
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"recipe": recipe.model_dump(mode="json"), "resume_from": _absolute(resume_from),
                           "hooks": hooks},
        torch_config=torch_config(s.use_gpu),
        scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu,
                                     resources_per_worker={"CPU": s.cpus_per_worker}),
        run_config=RunConfig(name=recipe.run.name, storage_path=str(recipe.run_dir / "ray"),
                             failure_config=FailureConfig(max_failures=s.max_failures),
                             # checkpoint.keep is kept by prefinetune's rule (prefinetune/run/controller.py):
                             # Ray Train's would count a torn checkpoint and delete a whole one for it. Ray's
                             # record (its snapshot) then lists deleted checkpoints too: run() moves it aside
                             # before every start, and Ray reloads it only then
                             checkpoint_config=CheckpointConfig(num_to_keep=None),
                             callbacks=controller_callbacks(recipe.checkpoint.keep, recipe.eval.select),
                             # Ray Train's INFO lines come per worker per checkpoint; warnings stay
                             logging_config=LoggingConfig(log_level="WARNING")))
    handler = signal.getsignal(signal.SIGINT)      # Ray Train installs its own for fit() and leaves it
    with DriverProgress(recipe.run_dir / PROGRESS_FILE, recipe.train.updates):
        try:
            return trainer.fit()
        except TrainingFailedError as err:     # a worker's own stop (prefinetune.run.errors) is said alone
            reason = stop_reason(err) or storage_error(err)
            if reason is None:
                raise
            raise RunFailed(f"{reason}. {resume_hint(recipe)}") from err
        except (KeyboardInterrupt, SystemExit) as err:
            # Ctrl-C: Ray Train's own SIGINT handler aborts the workers and exits (SystemExit); SIGTERM: the
            # entry point's handler raises KeyboardInterrupt
            raise RunInterrupted(resume_hint(recipe)) from err
        finally:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, handler)


def resume_hint(recipe: RecipeConfig) -> str:
    """Which checkpoint a stopped run can resume from (the newest whole one), or that it has none."""
    from prefinetune.distributed.checkpoint_files import checkpoint_update, newest_in

    newest = newest_in(recipe.checkpoints_dir)
    if newest is None:
        from prefinetune.run.checkpoints import aside_newest

        aside = aside_newest(recipe.checkpoints_dir)
        if aside is not None:
            return (f"No whole checkpoint is left in line; an earlier attempt's newest, set aside, is {aside} "
                    f"(update {checkpoint_update(aside)}): resume with --resume-from {aside}")
        return "No whole checkpoint was saved before it; a new run starts from update 0"
    return (f"The newest whole checkpoint, untouched, is {newest} (update {checkpoint_update(newest)}): "
            f"resume with --resume-from {newest}")


def export_run(recipe: RecipeConfig, checkpoint, out_dir: Path, metrics: dict | None = None,
               exported: dict | None = None, hooks: RunHooks | None = None) -> Path:
    """A checkpoint as a Hugging Face folder (see prefinetune.export), `metrics` in its card, `exported`
    saying which checkpoint it is and why; the model shaped and unshaped by `hooks` (e.g. LoRA merged)."""
    from prefinetune.export import export_from_checkpoint
    from prefinetune.run.console import quiet_libraries

    quiet_libraries(on_gpu=False)      # the export runs on the driver's CPU
    with checkpoint.as_directory() as folder:
        hooks = hooks or RunHooks()
        return export_from_checkpoint(folder, recipe, out_dir, metrics=metrics, exported=exported,
                                      shape=hooks.shape_model, unshape=hooks.unshape_model)


def choose_export(recipe: RecipeConfig, result) -> tuple:
    """(the checkpoint to export, its metrics, {update, why}): the last one, or with export.which best
    (the default when eval.select is set) the kept checkpoint with the best score (prefinetune/run/selection.py)."""
    import ray.train

    from prefinetune.run.checkpoints import checkpoint_updates
    from prefinetune.run.selection import best_checkpoint, export_choice, read_score

    final, last = dict(result.metrics), result.checkpoint
    if export_choice(recipe) == "last":
        return last, final, {"update": final.get("update"), "why": f"update {final.get('update')}, the run's last "
                             "checkpoint (export.which: last)"}
    select, mode = recipe.eval.select, recipe.eval.select.mode
    kept = [p for p, u in checkpoint_updates(Path(last.path).parent).items() if u is not None]
    best = best_checkpoint(kept, mode, select.metric)
    record = read_score(best) if best is not None else None
    if record is None:
        return last, final, {"update": final.get("update"), "why": f"update {final.get('update')}, the last "
                             "checkpoint: no kept checkpoint has a score (export.which: best)"}
    why = (f"update {record['update']}, the best {record['split']} {select.metric} ({mode}: {record['score']:.4f}) "
           f"of the checkpoints kept; the run went to update {final.get('update')} (export.which: best)")
    return ray.train.Checkpoint(str(best)), record["metrics"], {"update": record["update"], "why": why}


def metrics_table(metrics: dict, split: str) -> str:
    """Final per-task metrics as a readable table."""
    rows: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == split:
            rows.setdefault(parts[1], {})[parts[2]] = value
    names = sorted({k for r in rows.values() for k in r if k != "rows"})
    lines = [f"{'task':<20}" + "".join(f"{n:>12}" for n in names) + f"{'rows':>8}"]
    for task, r in sorted(rows.items()):
        cells = "".join(f"{r[n]:>12.4f}" if n in r else f"{'-':>12}" for n in names)
        lines.append(f"{task:<20}{cells}{int(r.get('rows', 0)):>8}")
    return "\n".join(lines)


def header(recipe: RecipeConfig, source: str | None = None) -> str:
    """What the run is, before it starts: recipe, model, tasks, workers, run folder."""
    s, t = recipe.scaling, recipe.train
    names = [task.name for task in recipe.tasks]
    shown = ", ".join(names if len(names) <= 12 else names[:12] + [f"... ({len(names) - 12} more)"])
    return "\n".join([
        f"[prefinetune] recipe: {source or '<in memory>'} (run {recipe.run.name!r}, seed {recipe.run.seed})",
        f"[prefinetune] model: {recipe.model.name_or_path} (max length {recipe.model.max_length})",
        f"[prefinetune] tasks ({len(names)}): {shown}",
        f"[prefinetune] workers: {s.num_workers} x {'GPU' if s.use_gpu else 'CPU'}, DeepSpeed ZeRO-"
        f"{recipe.deepspeed.zero_stage}; {t.updates} updates of {t.slots_per_update} slots",
        f"[prefinetune] run folder: {recipe.run_dir}"])


def how_to_load(export_dir: Path) -> str:
    """Where the export is and the lines that load it."""
    return "\n".join([
        f"[prefinetune] export: {export_dir}",
        "[prefinetune] load it with:",
        f'    AutoModel.from_pretrained("{export_dir}")                      # the backbone',
        f'    prefinetune.export.load_exported("{export_dir}")              # backbone + every head'])


def write_final_metrics(recipe: RecipeConfig, metrics: dict) -> str:
    """eval_final.json and eval_final.txt in the run folder; returns the table (one per split scored)."""
    from prefinetune.run.run_folder import FINAL_METRICS

    (recipe.run_dir / FINAL_METRICS).write_text(json.dumps(metrics, indent=2))
    splits = list(dict.fromkeys(k.split("/")[0] for k in metrics if k.count("/") == 2)) or [recipe.eval.split]
    table = "\n".join((f"[{split}]\n" if len(splits) > 1 else "") + metrics_table(metrics, split) for split in splits)
    (recipe.run_dir / "eval_final.txt").write_text(table + "\n")
    return table


def run(recipe: RecipeConfig, resume_from: str | None = None, source: str | None = None, hooks=None) -> dict:
    """Prepare, train (optionally resuming from a checkpoint folder), then in this order: final
    metrics, export, and the optional extras (plots), which may fail without failing the run. `hooks`
    (prefinetune/run/hooks.py): what a layer above the run changes in it (fine-tuning: its length from
    its epochs once the shards exist, its rows, its starting head, its summary)."""
    from prefinetune.model.multitask import resolve_head_widths
    from prefinetune.run.errors import RunInterrupted
    from prefinetune.run.run_folder import RunLock, check_resume, check_start
    from prefinetune.run.trackers import check_trackers

    hooks = hooks or RunHooks()
    recipe, resume_from = resolve_paths(recipe), _absolute(resume_from)
    check_backbone(recipe)                 # before anything is written: a bad model leaves no run folder
    check_trackers(recipe)                 # a tracker whose package is missing
    check_start(recipe, resume_from)       # a run already there; a --resume-from that is no checkpoint
    writable_folder(recipe.run_dir)
    with RunLock(recipe.run_dir):
        check_start(recipe, resume_from)   # again, holding the lock: a run may have ended in between
        prepare_data(recipe)
        recipe = hooks.resolve(resolve_head_widths(recipe))      # DyPa's widths fixed once, from these shards
        check_resume(recipe, resume_from, hooks)
        (recipe.run_dir / "recipe.json").write_text(json.dumps(recipe.model_dump(mode="json"), indent=2))
        print(header(recipe, source), flush=True)
        resume_from, moved = _set_aside_earlier_attempt(recipe, resume_from)
        aside = "; ".join(moved)
        if resume_from or aside:
            start = f"resuming from {resume_from}" if resume_from else "starting"
            print(f"[prefinetune] {start}" + (f" ({aside})" if aside else ""))
        try:
            return _train_and_export(recipe, resume_from, hooks)
        except KeyboardInterrupt as err:          # Ctrl-C (or SIGTERM) outside Ray Train's own handling
            raise RunInterrupted(resume_hint(recipe)) from err


def _set_aside_earlier_attempt(recipe: RecipeConfig, resume_from: str | None) -> tuple[str | None, list[str]]:
    """Before Ray starts: Ray Train's record of an earlier attempt in the run's folder moved aside (Ray
    Train would hand the workers the newest checkpoint it recorded, not the one given), and a
    --resume-from out of the folder's superseded/ put back in line. Returns (the checkpoint to resume
    from, what was moved, in words). The workers' rank 0 makes the rest of the folder one line
    (prefinetune/run/checkpoints.py) once the checkpoint is known to be whole."""
    from prefinetune.run.checkpoints import restore
    from prefinetune.run.ray_adapter import set_aside_snapshot

    notes = []
    aside = set_aside_snapshot(recipe.checkpoints_dir)
    if aside:
        notes.append(f"Ray Train's record of the earlier attempt moved to {aside}")
    if resume_from and "://" not in resume_from:
        back = restore(Path(resume_from), recipe.checkpoints_dir)
        if str(back) != resume_from:
            notes.append(f"{Path(resume_from).name} put back in line from {Path(resume_from).parent}")
            resume_from = str(back)
    return resume_from, notes


def _train_and_export(recipe: RecipeConfig, resume_from: str | None, hooks) -> dict:
    from prefinetune.run.best_effort import best_effort
    from prefinetune.run.task_mix import plot_task_mix
    from prefinetune.run.trackers import log_export

    result = train(recipe, resume_from, hooks)       # Ray Train raises TrainingFailedError when the run fails
    final = dict(result.metrics)
    table = write_final_metrics(recipe, final)
    scored = " and ".join(dict.fromkeys(k.split("/")[0] for k in final if k.count("/") == 2)) or recipe.eval.split
    print(f"[prefinetune] final {scored} metrics after {final.get('update')} updates:\n{table}")
    chosen, chosen_metrics, exported = choose_export(recipe, result)
    if Path(chosen.path) != Path(result.checkpoint.path):
        print(f"[prefinetune] exporting {exported['why']}")
    export_dir = export_run(recipe, chosen, recipe.run_dir / "export", chosen_metrics, exported, hooks)
    if hooks.plots:
        best_effort("the task-mix plot", plot_task_mix, recipe.run_dir / "metrics.jsonl",
                    recipe.run_dir / "task_mix.png")
    for where in best_effort("the export as a tracker artifact", log_export, recipe, export_dir) or []:
        print(f"[prefinetune] export logged to {where}")
    print(f"[prefinetune] checkpoint: {chosen.path}\n{how_to_load(export_dir)}", flush=True)
    out = {"metrics": final, "checkpoint": chosen.path, "export": str(export_dir),
           "run_dir": str(recipe.run_dir)}
    return {**out, **hooks.finish(recipe, final, export_dir)}
