"""The per-worker training loop that Ray Train runs on each of W workers.

Each update: the pure schedule gives S slots (or, with `sampling.policy: mt_uncertainty`, the model
picks each slot's task: `prefinetune.uncertainty`); this worker runs slots rank, rank+W, ... as
micro-steps (`prefinetune.step.run_update`), DeepSpeed steps the optimizer once on the mean gradient of
all S. Every `eval.every_updates` the tasks are scored on their dev split; every
`checkpoint.every_updates` (and at the end) every worker saves its DeepSpeed shard and reports it through
`ray.train.report`, with the update counter (and the MT-Uncertainty record) in `client_state`, so a
restarted run resumes where it was.
"""
from __future__ import annotations

import tempfile

import torch

from prefinetune.config import recipe_from_dict
from prefinetune.console import quiet_libraries, say
from prefinetune.data.schedule import plan_update, worker_slots
from prefinetune.data.shards import open_split, read_manifest
from prefinetune.evaluate import evaluate_tasks
from prefinetune.losses.r3f import low_precision_note
from prefinetune.model.multitask import build_model
from prefinetune.model.source import load_tokenizer
from prefinetune.run_log import RunLog, WindowStats
from prefinetune.step import TrainData, run_update
from prefinetune.task_mix import TaskMix
from prefinetune.uncertainty import UncertaintySampler

__all__ = ["train_worker", "checkpoint_tag"]


def checkpoint_tag(update: int) -> str:
    return f"update-{update:07d}"


def _splits(recipe, split: str) -> dict:
    """The shards of `split` for every task that has it."""
    manifest = read_manifest(recipe.shards_path)
    return {t.name: open_split(recipe.shards_path, t.name, split)
            for t in recipe.tasks if split in manifest["tasks"][t.name]["splits"]}


def _resume(engine, stats: WindowStats, sampler, resume_from: str | None) -> int:
    """Load the checkpoint to continue from: the latest one Ray hands back after a worker restart,
    else the folder given by --resume-from; returns the update to continue after."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and resume_from:
        checkpoint = ray.train.Checkpoint(resume_from)
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        _, client_state = engine.load_checkpoint(folder)
    stats.seen[:] = torch.tensor(client_state["seen"], dtype=stats.seen.dtype)
    if sampler is not None:
        sampler.load_state_dict(client_state["uncertainty"])
    return int(client_state["update"])


def _save_and_report(engine, update: int, stats: WindowStats, sampler, metrics: dict) -> None:
    """Every worker saves its shard of the DeepSpeed state; Ray merges them into one checkpoint."""
    import ray.train

    client_state = {"update": update, "seen": stats.seen.tolist()}   # the same on every rank
    if sampler is not None:
        client_state["uncertainty"] = sampler.state_dict()
    with tempfile.TemporaryDirectory() as folder:
        engine.save_checkpoint(folder, tag=checkpoint_tag(update), client_state=client_state)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _plan(recipe, sampler, engine, data: TrainData, task_ids: dict, update_index: int, rank: int, world: int,
          device):
    """(update `update_index`'s whole plan, this worker's slots): the pure schedule, or MT-Uncertainty's choice."""
    slots, seed, batch_size = recipe.train.slots_per_update, recipe.run.seed, recipe.train.batch_size
    if sampler is not None:
        return sampler.plan(engine.module, data, task_ids, seed, update_index, slots, rank, world, device, batch_size)
    plan = plan_update(recipe.sampling, seed, update_index, recipe.train.updates, slots, data.sizes, batch_size,
                       data.row_drawer)
    return plan, worker_slots(plan, rank, world)


def _check_r3f_precision(model, recipe, on_gpu: bool) -> None:
    """Say so when R3F's noise is below what the training precision can hold (prefinetune.losses.r3f)."""
    from prefinetune.dist.deepspeed_config import use_bf16

    dtype = torch.bfloat16 if use_bf16(recipe.deepspeed.precision, on_gpu) else torch.float32
    note = low_precision_note(model.backbone.get_input_embeddings().weight, recipe.r3f, dtype)
    if note:
        say(f"[prefinetune] WARNING: {note}")


def train_worker(config: dict) -> None:
    """Ray Train entry point: config = {"recipe": RecipeConfig.model_dump() with absolute paths,
    "resume_from": a checkpoint folder or None}."""
    import ray.train

    from prefinetune.dist.engine import build_engine

    recipe = recipe_from_dict(config["recipe"], "<worker config>")
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    on_gpu = torch.cuda.is_available() and recipe.scaling.use_gpu
    quiet_libraries(on_gpu)
    device = ray.train.torch.get_device() if on_gpu else torch.device("cpu")
    torch.manual_seed(recipe.run.seed)

    tokenizer = load_tokenizer(recipe.model.name_or_path, recipe.model.revision, recipe.model.trust_remote_code)
    model = build_model(recipe).to(device)
    if rank == 0:
        _check_r3f_precision(model, recipe, on_gpu)
    data = TrainData(_splits(recipe, "train"), recipe.tasks, tokenizer.pad_token_id,
                     recipe.train.token_budget, recipe.train.length_buckets)
    dev = _splits(recipe, recipe.eval.split)
    engine = build_engine(model, recipe, world, on_gpu)
    task_ids = {t.name: i for i, t in enumerate(recipe.tasks)}

    stats = WindowStats(list(task_ids))
    sampler = (UncertaintySampler(task_ids, recipe.sampling.candidate_tasks)
               if recipe.sampling.policy == "mt_uncertainty" else None)
    start = _resume(engine, stats, sampler, config.get("resume_from"))
    total = recipe.train.updates
    log, mix = RunLog(recipe.run_dir, rank, total), TaskMix(list(task_ids))
    metrics: dict = {}
    for update in range(start + 1, total + 1):      # update: 1-based count; update_index = update - 1 seeds it
        update_index = update - 1
        plan, mine = _plan(recipe, sampler, engine, data, task_ids, update_index, rank, world, device)
        mix.add(plan)                                    # the realised task mix of the whole update
        stats.add(run_update(engine, task_ids, mine, data, device, recipe.run.seed, update_index, recipe.r3f))
        log.step(update)
        last = update == total
        if update % recipe.train.log_every == 0 or last:
            window = sampler.flush() if sampler is not None else {}
            log.write(update, {"lr": engine.get_lr()[0], **stats.flush(world), **mix.flush(), **window})
        if update % recipe.eval.every_updates == 0 or last:
            scores = evaluate_tasks(engine.module, recipe.tasks, dev, tokenizer.pad_token_id,
                                    recipe.eval.batch_size, recipe.eval.max_rows, device, rank, world,
                                    tokenizer)
            metrics = {f"{recipe.eval.split}/{t}/{k}": v for t, m in scores.items() for k, v in m.items()}
            log.write(update, metrics)
        if update % recipe.checkpoint.every_updates == 0 or last:
            _save_and_report(engine, update, stats, sampler, {"update": update, **metrics})
            log.say(f"update {update}/{total}: checkpoint saved and reported to Ray Train")
