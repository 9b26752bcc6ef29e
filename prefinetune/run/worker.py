"""The per-worker training loop that Ray Train runs on each of W workers.

Each update: the pure schedule gives S slots (or, with `sampling.policy: mt_uncertainty`, the model
picks each slot's task: `prefinetune.sampling.uncertainty`); this worker runs slots rank, rank+W, ... as
micro-steps (`prefinetune.run.step.run_update`), DeepSpeed steps the optimizer once on the mean gradient of
all S. Every `eval.every_updates` the tasks are scored on their dev split; every
`checkpoint.every_updates` (and at the end) every worker saves its DeepSpeed shard and reports it through
`ray.train.report`, with the update counter (and the MT-Uncertainty record) in `client_state`, so a
restarted run resumes where it was.
"""
from __future__ import annotations

import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from prefinetune.data.shards import open_split, read_manifest
from prefinetune.losses.r3f import low_precision_note
from prefinetune.model.multitask import build_model
from prefinetune.model.source import load_tokenizer
from prefinetune.recipe.config import recipe_from_dict
from prefinetune.run.console import quiet_libraries, say
from prefinetune.run.evaluation import evaluate_tasks
from prefinetune.run.gradient_conflict import ConflictSampler, drop_later_lines
from prefinetune.run.hooks import RunHooks
from prefinetune.run.metrics_log import RunLog, WindowStats
from prefinetune.run.selection import Patience, score_record
from prefinetune.run.step import TrainData, run_update
from prefinetune.run.task_mix import TaskMix
from prefinetune.run.trackers import open_trackers
from prefinetune.sampling.schedule import plan_update, worker_slots
from prefinetune.sampling.svd_weights import SvdTaskWeights
from prefinetune.sampling.uncertainty import UncertaintySampler

__all__ = ["train_worker", "run_worker", "RaySession", "LocalSession", "checkpoint_tag"]


def checkpoint_tag(update: int) -> str:
    return f"update-{update:07d}"


class RaySession:
    """A Ray Train worker: rank and world from Ray, checkpoints reported to Ray Train."""

    saves_checkpoints = True

    def __init__(self):
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device() if torch.cuda.is_available() else torch.device("cpu")

    def checkpoint(self, resume_from: str | None, experiment: Path):
        """The latest checkpoint Ray hands back after a worker restart, else the --resume-from folder;
        a torn one (a file missing or cut short) gives way to the newest whole one before it. Rank 0 then
        makes this run's checkpoint folder (`experiment`) one line ending there (torn ones to torn/, later
        ones to superseded/: prefinetune/run/checkpoints.py), so that `checkpoint.keep` counts whole
        checkpoints of this line only."""
        import pyarrow.fs
        import ray.train

        from prefinetune.distributed.checkpoint_files import agreed_newest_whole
        from prefinetune.run.checkpoints import tidy_at_start

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None and resume_from:
            checkpoint = ray.train.Checkpoint(resume_from)
        if checkpoint is None:
            return None
        local = isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem)
        found = agreed_newest_whole(Path(checkpoint.path), self.rank, local)     # the same on every rank
        if found is None:                                                        # remote storage: taken as it is
            return checkpoint
        if self.rank == 0:
            for line in ([found.note] if found.note else []) + tidy_at_start(experiment, found):
                say(f"[prefinetune] WARNING: {line}")
        return ray.train.Checkpoint(str(found.folder))

    def report(self, engine, update: int, client_state: dict, metrics: dict, score: dict | None = None) -> None:
        """Every worker saves its shard of the DeepSpeed state and the list of its files (sizes, sha256);
        Ray merges them into one checkpoint. Rank 0 adds the checkpoint's `score` (eval.select)."""
        import ray.train

        from prefinetune.distributed.checkpoint_files import write_file_list
        from prefinetune.run.errors import CheckpointWriteError
        from prefinetune.run.selection import write_score

        try:
            with tempfile.TemporaryDirectory() as folder:
                engine.save_checkpoint(folder, tag=checkpoint_tag(update), client_state=client_state)
                if score is not None and self.rank == 0:
                    write_score(Path(folder), score)
                write_file_list(Path(folder), self.rank, self.world)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
        except (OSError, RuntimeError) as err:       # torch.save on a full disk: "PytorchStreamWriter failed writing"
            if isinstance(err, RuntimeError) and "failed writing" not in str(err):
                raise
            reason = getattr(err, "strerror", None) or str(err)
            where = f": {err.filename}" if getattr(err, "filename", None) else ""
            raise CheckpointWriteError(f"update {update}: rank {self.rank} could not write its checkpoint ({reason}"
                                       f"{where}); the run stops, the checkpoints before it untouched") from err


class LocalSession:
    """One process outside Ray Train (a `prefinetune compare` trial): world 1, no checkpoints; the last
    reported metrics are kept in `.metrics`."""

    rank, world, saves_checkpoints = 0, 1, False

    def __init__(self, device: torch.device | None = None):
        self.device = device or (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
        self.metrics: dict = {}

    def checkpoint(self, resume_from: str | None, experiment: Path):
        return None

    def report(self, engine, update: int, client_state: dict, metrics: dict, score: dict | None = None) -> None:
        self.metrics = dict(metrics)


class Skips:
    """Updates skipped for a non-finite loss or gradient (train.nonfinite_skips): counted, said, and
    past the allowance an error that stops the run."""

    def __init__(self, allowed: int):
        self.allowed, self.count = allowed, 0

    def add(self, why: str, log: RunLog, update: int) -> None:
        from prefinetune.run.step import NonFiniteLossError

        self.count += 1
        if self.count > self.allowed:
            raise NonFiniteLossError(f"{why}; that is {self.count} updates with a non-finite loss or gradient, more "
                                     f"than train.nonfinite_skips={self.allowed}: the run stops (the last checkpoint "
                                     "is intact)")
        log.say(f"[prefinetune] WARNING: {why}; update skipped on every rank ({self.count} of "
                f"train.nonfinite_skips={self.allowed})")
        log.write(update, {"skipped_updates": self.count})


class Sampling:
    """What the run's sampling keeps beyond the pure schedule: MT-Uncertainty's record and the SVD task weights
    (each None when the recipe does not use it), logged per window and kept in checkpoints."""

    def __init__(self, recipe, task_ids: dict[str, int]):
        s = recipe.sampling
        self.uncertainty = (UncertaintySampler(task_ids, s.candidate_tasks) if s.policy == "mt_uncertainty"
                            else None)
        self.weights = (SvdTaskWeights(list(task_ids), s.svd_every, s.svd_rank, s.svd_rows, recipe.train.batch_size)
                        if s.task_weights == "svd" else None)

    def flush(self) -> dict:
        return {**(self.uncertainty.flush() if self.uncertainty is not None else {}),
                **(self.weights.flush() if self.weights is not None else {})}

    def state(self) -> dict:
        out = {}
        if self.uncertainty is not None:
            out["uncertainty"] = self.uncertainty.state_dict()
        if self.weights is not None:
            out["task_weights"] = self.weights.state_dict()
        return out

    def load(self, client_state: dict) -> None:
        if self.uncertainty is not None:
            self.uncertainty.load_state_dict(client_state["uncertainty"])
        if self.weights is not None:
            self.weights.load_state_dict(client_state.get("task_weights"))


def _resume(engine, stats: WindowStats, sampling: Sampling, skips: Skips, checkpoint, run_dir, rank: int,
            world: int, patience: Patience | None = None) -> int:
    """Load the checkpoint to continue from; returns the update to continue after (0: a fresh start).
    One saved on another number of workers is re-sharded (prefinetune/distributed/reshard.py)."""
    from prefinetune.distributed.reshard import load_checkpoint

    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        client_state = load_checkpoint(engine, Path(folder), run_dir, rank, world)
    stats.seen[:] = torch.tensor(client_state["seen"], dtype=stats.seen.dtype)
    sampling.load(client_state)
    skips.count = int(client_state.get("skipped_updates", 0))
    if patience is not None:
        patience.load_state(client_state.get("patience"))
    return int(client_state["update"])


def _write_window(update: int, log: RunLog, engine, stats: WindowStats, mix: TaskMix, sampling: Sampling) -> None:
    """The log window that ends at `update`: lr, per-task loss and examples, task mix, MT-Uncertainty, the SVD
    task weights in force."""
    log.write(update, {"lr": engine.get_lr()[0], **stats.flush(), **mix.flush(), **sampling.flush()})


def _stop_early(stop: str, update: int, log: RunLog, stats: WindowStats, mix: TaskMix, sampling: Sampling, engine,
                recipe,
                metrics: dict, unscored: dict, scoring: tuple) -> dict:
    """An early stop at `update`: said, the open log window written (it would close only at the run's
    end), and the final splits not scored yet scored; returns the metrics the last checkpoint reports."""
    log.say(f"[prefinetune] {stop}")
    if update % recipe.train.log_every:
        _write_window(update, log, engine, stats, mix, sampling)
    if unscored:
        extra = _score(engine, recipe, unscored, *scoring)
        log.write(update, extra)
        metrics = {**metrics, **extra}
    return metrics


def _client_state(recipe, update: int, stats: WindowStats, sampling: Sampling, skips: Skips,
                  patience: Patience | None = None) -> dict:
    """What a checkpoint holds beside the weights and optimizer; the recipe lets a resume check that it
    continues this run (prefinetune/run/run_folder.py)."""
    client_state = {"update": update, "seen": stats.seen_so_far(),    # the same on every rank
                    "skipped_updates": skips.count, "recipe": recipe.model_dump(mode="json"),
                    "patience": patience.state() if patience is not None else None}
    return {**client_state, **sampling.state()}


def _plan(recipe, sampler: UncertaintySampler | None, engine, data: TrainData, task_ids: dict, update_index: int,
          rank: int, world: int, device):
    """(update `update_index`'s whole plan, this worker's slots): the pure schedule, or MT-Uncertainty's choice."""
    slots, seed, batch_size = recipe.train.slots_per_update, recipe.run.seed, recipe.train.batch_size
    if sampler is not None:
        return sampler.plan(engine.module, data, task_ids, seed, update_index, slots, rank, world, device, batch_size)
    plan = plan_update(recipe.sampling, seed, update_index, recipe.train.updates, slots, data.sizes, batch_size,
                       data.row_drawer)
    return plan, worker_slots(plan, rank, world)


def _check_r3f_precision(model, recipe, on_gpu: bool) -> None:
    """Say so when R3F's noise is below what the training precision can hold (prefinetune.losses.r3f)."""
    from prefinetune.distributed.deepspeed_config import use_bf16

    dtype = torch.bfloat16 if use_bf16(recipe.deepspeed.precision, on_gpu) else torch.float32
    note = low_precision_note(model.backbone.get_input_embeddings().weight, recipe.r3f, dtype)
    if note:
        say(f"[prefinetune] WARNING: {note}")


def _record_worker(run_dir, rank: int) -> None:
    """run_dir/workers/rank-R.json: this worker's host and process id (which process to look at, or to stop)."""
    import json
    import os
    import socket

    folder = run_dir / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"rank-{rank}.json").write_text(json.dumps({"rank": rank, "pid": os.getpid(),
                                                          "host": socket.gethostname()}))


def _data(recipe, pad_id: int, hooks: RunHooks):
    """(training data, {split: {task: rows}} scored every eval, the same at the end), as the hooks choose."""
    manifest = read_manifest(recipe.shards_path)
    train, periodic, final = hooks.splits(recipe, manifest, lambda task, split: open_split(recipe.shards_path,
                                                                                        task, split))
    t = recipe.train
    data = TrainData(train, recipe.tasks, pad_id, t.token_budget, t.length_buckets, t.batch_size,
                     recipe.model.max_length)
    return data, periodic, final


def _score(engine, recipe, splits: dict, tokenizer, device, rank: int, world: int) -> dict:
    """{split/task/metric: value} for every split given."""
    metrics = {}
    for split, tasks in splits.items():
        scores = evaluate_tasks(engine.module, recipe.tasks, tasks, tokenizer.pad_token_id, recipe.eval.batch_size,
                                recipe.eval.max_rows, device, rank, world, tokenizer)
        metrics.update({f"{split}/{t}/{k}": v for t, m in scores.items() for k, v in m.items()})
    return metrics


def train_worker(config: dict) -> None:
    """Ray Train entry point: config = {"recipe": RecipeConfig.model_dump() with absolute paths,
    "resume_from": a checkpoint folder or None, "hooks": the run's RunHooks}."""
    run_worker(recipe_from_dict(config["recipe"], "<worker config>"), RaySession(), config.get("resume_from"),
               config.get("hooks"))


def run_worker(recipe, session, resume_from: str | None = None, hooks: RunHooks | None = None) -> None:
    """The training loop of one worker (`session`: RaySession under Ray Train, LocalSession alone; `hooks`:
    what a layer above the run changes, prefinetune/run/hooks.py)."""
    from prefinetune.distributed.engine import build_engine

    rank, world = session.rank, session.world
    on_gpu = session.device.type == "cuda" and recipe.scaling.use_gpu
    device = session.device if on_gpu else torch.device("cpu")
    quiet_libraries(on_gpu)
    torch.manual_seed(recipe.run.seed)

    tokenizer = load_tokenizer(recipe.model.name_or_path, recipe.model.revision, recipe.model.trust_remote_code)
    model = build_model(recipe).to(device)
    log = RunLog(recipe.run_dir, rank, recipe.train.updates)
    hooks = hooks or RunHooks()
    for started in (hooks.start_model(model, recipe), hooks.shape_model(model, recipe)):
        if started:
            log.say(f"[prefinetune] {started}")
    if rank == 0:
        _check_r3f_precision(model, recipe, on_gpu)
    data, periodic, final = _data(recipe, tokenizer.pad_token_id, hooks)
    engine = build_engine(model, recipe, world, on_gpu)
    task_ids = {t.name: i for i, t in enumerate(recipe.tasks)}
    conflicts = ConflictSampler(engine.module, recipe, rank) if recipe.diagnostics.every else None

    stats = WindowStats(list(task_ids))
    sampling = Sampling(recipe, task_ids)
    skips = Skips(recipe.train.nonfinite_skips)
    patience, select_split = Patience(recipe), next(iter(periodic), recipe.eval.split)   # fine-tuning: its select split
    checkpoint = session.checkpoint(resume_from, recipe.checkpoints_dir)
    start = _resume(engine, stats, sampling, skips, checkpoint, recipe.run_dir, rank, world, patience)
    log.resumed(start)
    if rank == 0:
        drop_later_lines(recipe.run_dir, start)        # gradient_conflict.jsonl: the updates run again
        log.trackers = open_trackers(recipe, start)
    _record_worker(recipe.run_dir, rank)
    total = recipe.train.updates
    try:
        if start == 0 and hooks.score_at_start(recipe):
            log.write(0, _score(engine, recipe, periodic, tokenizer, device, rank, world))
        mix = TaskMix(list(task_ids))
        metrics: dict = {}
        for update in range(start + 1, total + 1):      # update: 1-based count; update_index = update - 1 seeds it
            update_index = update - 1
            plan, mine = _plan(recipe, sampling.uncertainty, engine, data, task_ids, update_index, rank, world, device)
            weights = sampling.weights
            if weights is not None:
                weights.refresh(engine.module, data, task_ids, recipe.run.seed, update_index, rank, world, device)
            mix.add(plan)                                    # the realised task mix of the whole update
            start_s = time.perf_counter()
            with conflicts.update(update) if conflicts is not None else nullcontext() as probe:
                done = run_update(engine, task_ids, mine, data, device, recipe.run.seed, update_index, recipe.r3f,
                                  skip_nonfinite=skips.allowed > 0, probe=probe,
                                  task_weights=weights.weights if weights is not None else None)
            if done.skipped:
                skips.add(done.skipped, log, update)
            else:
                stats.add(done.slots, time.perf_counter() - start_s)
            log.step(update)
            last = update == total
            if update % recipe.train.log_every == 0 or last:
                _write_window(update, log, engine, stats, mix, sampling)
            if update % recipe.eval.every_updates == 0 or last:
                metrics = _score(engine, recipe, final if last else periodic, tokenizer, device, rank, world)
                log.write(update, metrics)
                stop = patience.after_eval(update, metrics, select_split)   # the same on every rank (gathered)
                if stop and not last:
                    last = True
                    metrics = _stop_early(stop, update, log, stats, mix, sampling, engine, recipe, metrics,
                                          {k: v for k, v in final.items() if k not in periodic},
                                          (tokenizer, device, rank, world))
            if update % recipe.checkpoint.every_updates == 0 or last:
                state = _client_state(recipe, update, stats, sampling, skips, patience)
                session.report(engine, update, state, {"update": update, **metrics},
                               score_record(update, metrics, recipe, select_split))
                if session.saves_checkpoints:
                    log.say(f"update {update}/{total}: checkpoint saved and reported to Ray Train")
            if last:
                break
    except BaseException:
        log.close(failed=True)
        raise
    log.close()
