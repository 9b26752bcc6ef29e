"""MT-Uncertainty sampling (CA-MTL, Pilault et al. 2021): each slot trains on the candidate batch that the
model is least sure about. Recipe: `sampling: {policy: mt_uncertainty}` (optionally `candidate_tasks: K`).

For slot k of update t, every task (or K of them, drawn uniformly without replacement for that slot)
offers one candidate batch, its rows drawn as any slot's are (`prefinetune.sampling.schedule`) from a
generator keyed on (seed, t, k, task). The model scores each candidate with no gradients and no dropout:

    H_{T,i} = -sum_c p_c log p_c          entropy of the model's prediction for example i of task T
    Hbar_T  = mean_i H_{T,i}              the candidate batch's mean entropy
    H'_T    = log n_T                     entropy of the uniform distribution over the n predictions (the
                                          n of log(n) loss scaling: classes, choices, positions, vocabulary)
    U_T     = Hbar_T / (H'_T * max_S Hbar_S)     max over the slot's candidates

and the slot trains on the candidate with the largest U_T (ties: the earlier in the slot's seeded
candidate order). U_T is CA-MTL's per-example score U_x = H_x / (H' * max_S Hbar_S) averaged over the batch.

What is scored, per family: classification the class distribution; multiple choice the distribution
over the row's choices; span the start and end distributions over the window's positions (their mean);
summarization the vocabulary distribution at each token of the reference summary, teacher-forced, averaged
over its tokens. Regression predicts a number, not a distribution, so a recipe with mt_uncertainty and a
regression task is rejected when it is loaded.

Where this differs from CA-MTL, and why:
- CA-MTL keeps the b most uncertain *examples* of all candidates, a batch of mixed tasks. Muppet's slots
  are homogeneous (one task per micro-step, one head's loss), so whole candidate batches compete here.
  max_S Hbar_S is common to every candidate of a slot: it does not change the winner, only the scale of
  the logged scores.
- CA-MTL walks each task's data without replacement and consumes the candidates it does not keep; here
  a candidate's rows are drawn like every other slot's, so nothing but the weights decides the schedule.

Seeded and resumable: candidates are a pure function of (seed, update, slot, task) and the scores a
function of the weights, which the checkpoint holds; the sampler's record (how often each task was
offered and how often it won) travels in the checkpoint's client_state. On W workers each worker scores
the candidates of its own slots only (S * T / W no-grad forward passes per update, with no communication
while scoring); then one all-gather shares the winners and scores, so every rank logs the whole update.

    python -m pytest tests/sampling/test_uncertainty.py -q
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from prefinetune.distributed import collectives
from prefinetune.families.eval_loop import eval_mode
from prefinetune.families.family import get_family
from prefinetune.sampling.schedule import Slot, draw_rows

__all__ = ["example_entropy", "uncertainty_scores", "candidate_order", "candidate_slot", "score_batch",
           "choose_slot", "UncertaintySampler"]

_CANDIDATE_STREAM = 3     # generator keys [seed, update_index, slot, stream, ...]: no slot key has a 4th word
PREFIX = "uncertainty/"   # log key of a task's mean score over a window of updates


def example_entropy(family: str, outputs, batch: dict) -> torch.Tensor:
    """[B] entropy of the model's predictive distribution for each example of a batch: the family says
    how (`Family.entropy`; see the module docstring)."""
    return get_family(family).entropy(outputs, batch)


def uncertainty_scores(mean_entropy: Sequence[float], max_entropy: Sequence[float]) -> np.ndarray:
    """U_T = Hbar_T / (H'_T * max_S Hbar_S) for the candidates of one slot; 0 where the model is certain of
    everything offered (max_S Hbar_S = 0) or a task has a single outcome (H'_T = 0)."""
    mean = np.asarray(mean_entropy, dtype=np.float64)
    denominator = np.asarray(max_entropy, dtype=np.float64) * mean.max()
    return np.divide(mean, denominator, out=np.zeros_like(mean), where=denominator > 0)


def candidate_order(seed: int, update_index: int, slot: int, names: Sequence[str],
                    k: Optional[int] = None) -> list[str]:
    """The tasks that offer slot `slot` of update `update_index` a candidate, in a seeded order: the first k of a
    random permutation (all tasks when k is None)."""
    rng = np.random.default_rng([seed, update_index, slot, _CANDIDATE_STREAM])
    order = [names[i] for i in rng.permutation(len(names))]
    return order if k is None else order[:k]


def candidate_slot(seed: int, update_index: int, slot: int, task_index: int, task: str, size: int, batch_size: int,
                   draw=None) -> Slot:
    """Task `task`'s candidate batch for the slot: rows drawn as any slot's are (`draw_rows`), from a
    generator keyed on (seed, update_index, slot, task)."""
    rng = np.random.default_rng([seed, update_index, slot, _CANDIDATE_STREAM, task_index])
    return Slot(slot, task, draw_rows(rng, task, size, batch_size, draw))


@torch.no_grad()
def score_batch(model, task_id: int, task, batch: dict) -> tuple[float, float]:
    """(Hbar, H') of one candidate batch: the mean entropy of the predictions, and log n."""
    outputs = model(task_id, batch)["outputs"]
    n = get_family(task.family).num_predictions(task, batch, outputs)
    return float(example_entropy(task.family, outputs, batch).mean()), math.log(n)


def choose_slot(model, data, task_ids: dict[str, int], seed: int, update_index: int, slot: int, batch_size: int,
                device, k: Optional[int] = None) -> tuple[Slot, dict[str, float]]:
    """Slot `slot` of update `update_index`: the most uncertain of the candidates (prefinetune.run.step.TrainData
    supplies rows and batches), and every candidate's score U_T."""
    names, sizes = list(task_ids), data.sizes
    candidates = [candidate_slot(seed, update_index, slot, names.index(t), t, sizes[t], batch_size, data.row_drawer)
                  for t in candidate_order(seed, update_index, slot, names, k)]
    with eval_mode(model):
        stats = [score_batch(model, task_ids[c.task], data.tasks[c.task], data.batch(c, device))
                 for c in candidates]
    scores = uncertainty_scores([h for h, _ in stats], [m for _, m in stats])
    return candidates[int(np.argmax(scores))], {c.task: float(u) for c, u in zip(candidates, scores)}


class UncertaintySampler:
    """Plans updates under MT-Uncertainty on one worker and keeps the record that is logged and saved.

        sampler = UncertaintySampler(task_names, recipe.sampling.candidate_tasks)
        plan, mine = sampler.plan(engine.module, data, task_ids, seed, update_index, slots, rank, world, device,
                                  batch_size)
        log.write(update, sampler.flush())          # {"uncertainty/<task>": mean U over the window}
        client_state["uncertainty"] = sampler.state_dict()
    """

    def __init__(self, task_names: Iterable[str], candidate_tasks: Optional[int] = None):
        self.names = list(task_names)
        self.k = candidate_tasks
        self.offered = np.zeros(len(self.names), dtype=np.int64)   # candidates offered, whole run
        self.won = np.zeros(len(self.names), dtype=np.int64)       # slots won, whole run
        self._window = np.zeros((2, len(self.names)))              # sum of U, candidates, this window

    def plan(self, model, data, task_ids: dict[str, int], seed: int, update_index: int, slots: int, rank: int,
             world: int, device, batch_size: int) -> tuple[list[Slot], list[Slot]]:
        """(the update's plan, this worker's slots). This worker picks slots rank, rank + W, ...; the plan
        holds every slot's task (rows only for this worker's own slots) from all workers."""
        chosen = [choose_slot(model, data, task_ids, seed, update_index, k, batch_size, device, self.k)
                  for k in range(rank, slots, world)]
        mine = [slot for slot, _ in chosen]
        scores = np.full((len(chosen), len(self.names)), np.nan)
        for row, (_, by_task) in enumerate(chosen):
            for task, u in by_task.items():
                scores[row, self.names.index(task)] = u
        winners, scores = _all_gather([self.names.index(s.task) for s in mine], scores)
        self._record(winners, scores)
        by_index = {s.index: s for s in mine}
        plan = [by_index.get(k, Slot(k, self.names[w], ())) for k, w in zip(_gathered_order(slots, world), winners)]
        return sorted(plan, key=lambda s: s.index), mine

    def _record(self, winners: np.ndarray, scores: np.ndarray) -> None:
        offered = ~np.isnan(scores)
        self.offered += offered.sum(axis=0)
        np.add.at(self.won, winners, 1)
        self._window += np.stack([np.where(offered, scores, 0.0).sum(axis=0), offered.sum(axis=0)])

    def flush(self) -> dict[str, float]:
        """{"uncertainty/<task>": the task's mean score U over the window's candidates} (tasks offered at
        least once), then a new window."""
        total, count = self._window
        record = {f"{PREFIX}{t}": float(total[i] / count[i]) for i, t in enumerate(self.names) if count[i]}
        self._window[:] = 0.0
        return record

    def state_dict(self) -> dict:
        return {"tasks": list(self.names), "offered": self.offered.tolist(), "won": self.won.tolist()}

    def load_state_dict(self, state: dict) -> None:
        if state["tasks"] != self.names:
            raise ValueError(f"the checkpoint's MT-Uncertainty record is for tasks {state['tasks']}, "
                             f"this run has {self.names}")
        self.offered[:] = state["offered"]
        self.won[:] = state["won"]


def _gathered_order(slots: int, world: int) -> list[int]:
    """Slot indices in the order all-gather returns them: worker 0's slots, then worker 1's, ..."""
    return [k for rank in range(world) for k in range(rank, slots, world)]


def _all_gather(winners: list[int], scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every worker's winners [S] and scores [S, T], in `_gathered_order` (one process: its own); the
    collective puts the table where the process group's backend takes it."""
    local = torch.cat([torch.as_tensor(winners, dtype=torch.float64)[:, None],
                       torch.as_tensor(scores, dtype=torch.float64)], dim=1)
    table = torch.cat(collectives.all_gather(local)).cpu().numpy()
    return table[:, 0].astype(np.int64), table[:, 1:]
