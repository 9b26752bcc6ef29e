"""One update of heterogeneous multi-task training, as each worker runs it.

A worker receives its share of the update's slots; each slot is one micro-step on a homogeneous
batch of one task: forward, the family loss divided by log(n), `engine.backward`, `engine.step`
(DeepSpeed applies the optimizer only after the last micro-step of the update).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from prefinetune.distributed import collectives
from prefinetune.families.eval_loop import to_device
from prefinetune.families.family import get_family
from prefinetune.losses.r3f import embedding_noise
from prefinetune.losses.scaling import scale_loss
from prefinetune.run.errors import RunStopped
from prefinetune.sampling.batching import LengthBuckets, budget_for_rows, budget_rows, expected_rows
from prefinetune.sampling.schedule import Slot

__all__ = ["SlotResult", "UpdateResult", "TrainData", "to_device", "slot_loss", "seed_slot", "NonFiniteLossError",
           "nonfinite_slot", "run_update"]


@dataclass(frozen=True)
class SlotResult:
    task: str
    loss: float          # the family loss before log(n) scaling
    examples: int
    real_tokens: int = 0       # non-padding tokens in the batch
    computed_tokens: int = 0   # tokens the batch tensor holds
    data_s: float = 0.0        # seconds the slot waited for its batch (rows read, collated, moved)


class TrainData:
    """The training splits of every task, read from shards, turned into batches for slots."""

    def __init__(self, splits: dict, tasks: list, pad_id: int, token_budget: int | str | None = None,
                 length_buckets: int | None = None, batch_size: int | None = None, max_length: int | None = None):
        self.splits = splits                      # task name -> TaskSplit
        self.tasks = {t.name: t for t in tasks}   # task name -> TaskConfig
        self.pad_id = pad_id
        self.buckets = ({name: LengthBuckets.from_lengths(split.lengths, length_buckets)
                         for name, split in splits.items()} if token_budget else {})
        self.budgets = {name: self._budget(token_budget, buckets, batch_size, max_length)
                        for name, buckets in self.buckets.items()}     # task -> tokens per slot

    @staticmethod
    def _budget(token_budget, buckets: LengthBuckets, batch_size, max_length) -> int:
        if token_budget != "auto":
            return int(token_budget)
        if not batch_size or not max_length:
            raise ValueError("token_budget 'auto' needs the batch_size and max_length it is sized from")
        return budget_for_rows(buckets, batch_size, batch_size * max_length)

    def draw(self, task: str, rng: np.random.Generator) -> tuple[int, ...]:
        """A slot's rows under the task's token budget, length-bucketed (prefinetune.sampling.batching)."""
        return budget_rows(rng, self.buckets[task], self.budgets[task])

    @property
    def row_drawer(self):
        """What the schedule uses to pick a slot's rows: None keeps batch_size random rows."""
        return self.draw if self.budgets else None

    def weight(self, slot: Slot) -> float:
        """A slot's share of the update: with a token budget, rows / the task's expected rows per slot,
        so every row weighs the same however many rows its bucket packs into a slot; else 1."""
        if not self.budgets:
            return 1.0
        return len(slot.rows) / expected_rows(self.buckets[slot.task], self.budgets[slot.task])

    @property
    def sizes(self) -> dict[str, int]:
        return {name: len(self.splits[name]) for name in self.tasks}

    def batch(self, slot: Slot, device: torch.device) -> dict[str, torch.Tensor]:
        family = get_family(self.tasks[slot.task].family)
        task = self.tasks[slot.task]
        rows = self.splits[slot.task].take(list(slot.rows))
        return to_device(family.collate(rows, self.pad_id, task), device)


def slot_loss(model, task_id: int, task, batch: dict, r3f=None, idle: dict | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss for backward, unscaled family loss for logging) of one homogeneous batch.

    The family loss (plus, with R3F on, lambda times the symmetric KL between clean and perturbed outputs)
    is divided by log(n) (n from the family: classes, choices, positions, vocabulary; regression has none
    and stays unscaled); the 0-valued `inactive` term ties every other head into the graph so all ranks
    build the same one (see prefinetune.model.multitask). `idle`, when given, receives each idle family
    head's output sum (what `nonfinite_slot` reads to say whose head was not finite)."""
    family = get_family(task.family)
    if r3f is not None and r3f.enabled:
        out, noisy = _clean_and_perturbed(model, task_id, batch, r3f)
        raw = family.loss(out["outputs"], batch, task)
        total = raw + r3f.weight * family.sym_kl(out["outputs"], noisy["outputs"], batch)
        inactive = out["inactive"] + noisy["inactive"]
    else:
        out = model(task_id, batch)
        total = raw = family.loss(out["outputs"], batch, task)
        inactive = out["inactive"]
    if idle is not None:         # both R3F passes: a NaN in either counts
        noisy_idle = noisy.get("idle_heads", {}) if r3f is not None and r3f.enabled else {}
        idle.update({k: v + noisy_idle.get(k, 0) for k, v in out.get("idle_heads", {}).items()})
    n = family.num_predictions(task, batch, out["outputs"])
    return (total if n is None else scale_loss(total, n)) + inactive, raw.detach()


def _clean_and_perturbed(model, task_id: int, batch: dict, r3f) -> tuple[dict, dict]:
    """Both R3F passes with the same dropout masks: the clean one runs under a forked RNG state, the
    noise comes from its own generator, so sigma = 0 reproduces the clean outputs exactly."""
    device = batch["input_ids"].device
    noise_seed = int(torch.randint(2**62, (1,)).item())
    generator = torch.Generator(device=device).manual_seed(noise_seed)

    def perturb(embeds: torch.Tensor) -> torch.Tensor:
        return embeds + embedding_noise(embeds.shape, embeds.dtype, device, r3f.sigma, r3f.noise, generator)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        clean = model(task_id, batch, perturb=lambda embeds: embeds)
    return clean, model(task_id, batch, perturb=perturb)


def seed_slot(seed: int, update_index: int, slot: int) -> None:
    """Seed dropout for one micro-step from (seed, update, slot): like the schedule, the noise a slot sees
    depends on nothing else, so runs resumed from a checkpoint or on another number of workers match."""
    torch.manual_seed(int(np.random.SeedSequence([seed, update_index, slot]).generate_state(1)[0]))


class NonFiniteLossError(RunStopped, FloatingPointError):
    """A slot's loss (or an update's gradient) was NaN or infinite. Raised on every rank at the same
    micro-step, before that slot's backward pass, so no optimizer step takes it in; the message names
    the task, update, slot and rows."""


@dataclass(frozen=True)
class UpdateResult:
    slots: list            # this worker's SlotResult per slot
    skipped: str | None    # why the optimizer skipped this update (train.nonfinite_skips > 0), else None


def _idle_culprits(raw: torch.Tensor | None, idle: dict | None) -> list[str]:
    """The idle family heads whose outputs were not finite, when the slot's own loss was finite."""
    if raw is None or not idle or not bool(torch.isfinite(raw).all()):
        return []
    return [name for name, value in idle.items() if not bool(torch.isfinite(value).all())]


def nonfinite_slot(loss: torch.Tensor, slot: Slot, update_index: int, raw: torch.Tensor | None = None,
                   idle: dict | None = None) -> str | None:
    """None when every rank's loss of this micro-step is finite, else (the same on every rank) what was
    not: one all-reduce of a flag per micro-step (at world size 1 too, where a process group exists), so
    the ranks act together, never hang. With the slot's own loss `raw` and the idle heads' outputs `idle`
    (slot_loss), a NaN that came from another family's head is said to be that head's."""
    finite = bool(torch.isfinite(loss.detach()).all())
    bad = collectives.all_reduce(torch.tensor([0.0 if finite else 1.0]), op="max")
    if not bad.item():
        return None
    mine = None if finite else (slot.task, slot.index, list(slot.rows), float(loss.detach().float().sum()),
                                _idle_culprits(raw, idle))
    found = collectives.all_gather_object(mine)
    task, index, rows, value, culprits = next(f for f in found if f is not None)
    if culprits:
        return (f"update {update_index + 1}, slot {index} (task {task!r}, training rows {rows}): the "
                f"{', '.join(culprits)} head{'s' if len(culprits) > 1 else ''}, idle in this slot, gave non-finite "
                f"outputs ({value}); task {task!r}'s own loss was finite, so the weights of "
                f"{'those heads' if len(culprits) > 1 else 'that head'} are no longer finite")
    return (f"update {update_index + 1}, slot {index}: task {task!r} gave a non-finite loss ({value}) on its "
            f"training rows {rows} (0-based rows of its train split)")


STOPPED = ("the run stops before this slot's backward pass, so no weights took it in and the last checkpoint "
           "is intact. Check those rows, or let the run skip such updates (train.nonfinite_skips, which a resume "
           "may change), or start a new run with a lower optim.lr or in fp32 (deepspeed.precision=fp32)")


def run_update(engine, task_ids: dict[str, int], slots: list[Slot], data: TrainData, device: torch.device,
               seed: int = 0, update_index: int = 0, r3f=None, skip_nonfinite: bool = False,
               probe=None, task_weights: dict[str, float] | None = None) -> UpdateResult:
    """This worker's micro-steps of update `update_index`. A non-finite loss on any rank stops every rank
    (NonFiniteLossError) before its backward pass; with `skip_nonfinite` the update is skipped instead:
    the NaN gradient it leaves makes DeepSpeed's ZeRO optimizer (stage >= 1) skip its step on every rank
    (weights, AdamW moments and the LR schedule untouched, gradients cleared), which is checked here.
    `probe` (a sampling GradientProbe) reads each slot's gradient during its backward; `task_weights` (SVD
    task re-weighting, prefinetune/sampling/svd_weights.py) multiply each slot's loss by its task's weight."""
    results, skipped = [], None
    for slot in slots:
        seed_slot(seed, update_index, slot.index)
        start = time.perf_counter()
        batch = data.batch(slot, device)
        waited = time.perf_counter() - start
        idle: dict = {}
        loss, raw = slot_loss(engine, task_ids[slot.task], data.tasks[slot.task], batch, r3f, idle)
        what = nonfinite_slot(loss, slot, update_index, raw, idle)
        if what is not None and not skip_nonfinite:
            raise NonFiniteLossError(f"{what}; {STOPPED}")
        skipped = skipped or what
        if probe is not None:
            probe.start()
        weight = data.weight(slot) * data.tasks[slot.task].loss_weight
        if task_weights is not None:
            weight *= task_weights[slot.task]
        engine.backward(loss * weight)
        if probe is not None:
            probe.stop(slot.task)
        engine.step()
        mask = batch["attention_mask"]
        results.append(SlotResult(slot.task, float(raw), len(slot.rows), int(mask.sum()), mask.numel(), waited))
    return UpdateResult(results, _check_step(engine, skipped, update_index, skip_nonfinite))


def _check_step(engine, skipped: str | None, update_index: int, skip_nonfinite: bool) -> str | None:
    """Why the update was skipped (None: it was applied), once DeepSpeed's step agrees with what was seen."""
    applied = engine.was_step_applied()
    if skipped is not None and applied:
        raise NonFiniteLossError(f"{skipped}, and DeepSpeed applied the update anyway: the gradient it left was "
                                 "finite (e.g. a batch whose labels are all ignored), or the optimizer is not "
                                 "ZeRO's (deepspeed.zero_stage 1 or 2); the run stops")
    if skipped is None and not applied:
        skipped = (f"update {update_index + 1}: every loss was finite but the gradient was not, and DeepSpeed "
                   "skipped the optimizer step")
        if not skip_nonfinite:
            raise NonFiniteLossError(f"{skipped}; the run stops here (train.nonfinite_skips lets it go on). "
                                     "Lower optim.lr, set optim.grad_clip, or train in fp32")
    return skipped
