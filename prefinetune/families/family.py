"""What a task family is: one object that owns everything family-specific, and the registry of them.

The core (config, readers, model, step, R3F, MT-Uncertainty, evaluation, export) asks a task's family
and never branches on its name. A family subclasses `Family`, fills in its methods, and is registered:

    from prefinetune.families.family import Family, register_family, get_family
    class Ordinal(Family):
        name = "ordinal"
        ...
    register_family(Ordinal())
    get_family("ordinal").loss(outputs, batch, task)

The six built-in families live in prefinetune/families/<family>.py, each ending with its Family class;
they are registered the first time any family is looked up. A family defined elsewhere (a test, a
plugin) registers itself with `register_family` before a recipe names it.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any, Optional

import torch
from torch import nn

__all__ = ["Family", "FamilyData", "FamilyHead", "FamilyLoss", "FamilyEvaluation", "FamilyExport", "Features",
           "register_family", "get_family", "family_names", "softmax_entropy", "BUILT_IN"]

BUILT_IN = ("classification", "regression", "multiple_choice", "span", "summarization", "tagging")
_REGISTRY: dict[str, "Family"] = {}


class Features:
    """What the backbone gives every head for one batch: token states [N, L, H], the pooled state
    [N, H] (first token; BART: last real token), the mask [N, L] of real positions, and the backbone's
    LM logits for given states (BART's tied LM head)."""

    def __init__(self, states: torch.Tensor, pooled: torch.Tensor, mask: torch.Tensor, lm_logits):
        self.states, self.pooled, self.mask, self.lm_logits = states, pooled, mask, lm_logits

    def first_token(self) -> "Features":
        """The same features cut to the first position: what a head of another family's batch runs on."""
        return Features(self.states[:, :1], self.pooled, self.mask[:, :1], self.lm_logits)


class FamilyData:
    """A family's recipe checks and data side: raw values -> records -> shard columns."""

    def check_task(self, task) -> None:
        """Raise ValueError for TaskConfig fields this family cannot use (label_names, metrics, ...)."""
        if task.label_names:
            raise ValueError(f"family {self.name!r} has no label_names")
        if task.metrics is not None:
            raise ValueError("metrics chooses among classification metrics; other families have fixed ones")
        if task.num_choices is not None:
            raise ValueError("num_choices is for multiple_choice tasks")

    def num_labels(self, task) -> int:
        """Outputs per example of the task's own head (classes); 1 where the head has one output."""
        return 1

    def to_record(self, values: dict[str, Any], task) -> dict:
        """One row's raw values by role -> the family's record; FieldError(role, reason) for a bad row."""
        raise NotImplementedError

    def tokenize(self, records: list[dict], tokenizer, task, max_length: int) -> dict[str, list]:
        """Records -> shard columns of equal length (a record may make several rows); includes `length`."""
        raise NotImplementedError

    # A family whose every sequence is one `tokenizer(texts, pairs, truncation=True, max_length=...)` call
    # sets this to `tokenize_encoded(records, encode, task)`: `tokenize` with that call made by `encode(texts,
    # pairs)`, so data prep can hand it prefinetune.data.threaded_encode's ThreadedEncoder (the same ids,
    # in threads). None: data prep runs `tokenize` in datasets.map worker processes.
    tokenize_encoded = None

    def threadable_tokenize(self):
        """`tokenize_encoded`, where the class that gives this family its `tokenize` gives that too (a
        subclass that overrides only `tokenize` is tokenized by it, not by an inherited hook); else None."""
        def owner(name: str):
            return next((c for c in type(self).__mro__ if name in c.__dict__), None)

        return self.tokenize_encoded if owner("tokenize_encoded") is owner("tokenize") else None

    def shard_schema(self, with_token_types: bool):
        raise NotImplementedError

    def split_stats(self, table, task) -> dict:
        """Extra manifest entries for a split."""
        return {}

    def unlabeled_values(self, values: dict[str, Any], task) -> dict[str, Any]:
        """Stand-ins for the `target_roles` of a row of an unlabeled split (a benchmark's test file), read
        only for predictions: raw values `to_record` accepts, never trained on or scored. Default: class
        or choice 0 in the `label` role."""
        return {"label": next(iter(task.label_map)) if task.label_map else 0}


class FamilyHead:
    """A family's head: built for its tasks, run on the backbone's features, copied for fine-tuning."""

    # a family with a head per dataset stacked in a bank sets this, and its build_head then takes the
    # keywords shared_dense (model.head_dense: shared, one dense layer for all its datasets) and attention
    # ((width per task, attention heads): model.head attention, prefinetune/model/task_banks.py)
    task_bank = False

    def build_head(self, tasks: list, hidden_size: int, dropout: float, spectral_norm: bool) -> nn.Module:
        """The head that serves `tasks` (this family's TaskHeads, in recipe order, with family_index)."""
        raise NotImplementedError

    def head_outputs(self, head: nn.Module, task, batch: dict, features: Features):
        """The head's outputs. `task` is None when the batch belongs to another family: the head then
        runs cheaply (one index, few positions) and its outputs only join the loss with weight 0, so
        every rank builds the same graph."""
        raise NotImplementedError

    def copy_head(self, head: nn.Module, saved: dict[str, torch.Tensor], index: int) -> None:
        """Fine-tuning: start `head`, which serves one task, from a saved head of this family (`saved`:
        its tensors by name, as `head.state_dict()` names them). A shared head is copied whole; else the
        tensors are stacked per task, and task `index`'s slice (trimmed to `head`'s classes) is taken."""
        with torch.no_grad():
            for name, tensor in head.state_dict(keep_vars=True).items():
                if name not in saved:
                    raise ValueError(f"the saved {self.name} head has no tensor {name!r} (it has {sorted(saved)})")
                rows = saved[name].shape[0]      # 1 for a bank's shared dense layer (model.head_dense: shared)
                source = saved[name] if self.shared_head else saved[name][0 if rows == 1 else index]
                target = tensor if self.shared_head else tensor[0]
                if any(s < t for s, t in zip(source.shape, target.shape)) or source.dim() != target.dim():
                    raise ValueError(f"the saved {self.name} head's {name} is {tuple(source.shape)}, "
                                     f"too small for {tuple(target.shape)}")
                target.copy_(source[tuple(slice(0, d) for d in target.shape)])


class FamilyLoss:
    """A family's training side: batches, the loss and its n for log(n), R3F's divergence, MT-Uncertainty's
    entropy."""

    def collate(self, rows: dict[str, list], pad_id: int, task) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, outputs, batch: dict, task) -> torch.Tensor:
        """The family loss, unscaled, in fp32."""
        raise NotImplementedError

    def num_predictions(self, task, batch: dict, outputs) -> Optional[int]:
        """n for log(n) scaling; None: the loss is not scaled."""
        raise NotImplementedError

    def sym_kl(self, clean, noisy, batch: dict) -> torch.Tensor:
        """R3F's penalty between outputs on clean and perturbed embeddings (prefinetune.losses.r3f)."""
        from prefinetune.losses.r3f import sym_kl

        return sym_kl(clean, noisy)

    def entropy(self, outputs, batch: dict) -> torch.Tensor:
        """[B] entropy of the predictive distribution per example (MT-Uncertainty)."""
        raise ValueError(f"MT-Uncertainty has no predictive distribution to score for family {self.name!r}")


class FamilyEvaluation:
    """A family's metrics on a split, and its predictions (prefinetune predict)."""

    def predictions(self, model, task_id: int, task, split, pad_id: int, batch_size: int, device,
                    tokenizer=None) -> list[dict]:
        """One dict per example of `split` (the records in their order; span: per example id, in order of
        first window): "prediction" (a label name, value, choice, tags, answer or summary, JSON-ready),
        "score" (the model's confidence in it, or None where the family has none) and "gold" (the same
        form, from the split's targets; meaningless on an unlabeled split, whose targets are stand-ins)."""
        raise NotImplementedError(f"family {self.name!r} writes no predictions")

    def evaluate(self, model, task_id: int, task, split, pad_id: int, batch_size: int, max_rows, device,
                 tokenizer=None) -> dict[str, float]:
        raise NotImplementedError


class FamilyExport:
    """A family's per-task stock transformers folders."""

    def task_folder_skipped(self, model_type: str) -> Optional[str]:
        """Why no per-task AutoModelFor* folder is written for this family's tasks (None: one is)."""
        return (f"no per-task AutoModelFor* folder for the {self.name} family: its head is in "
                "heads.safetensors")

    def task_model(self, model, task: dict, head_dropout: float):
        """One task (a tasks.json entry) as a stock transformers model, where `task_folder_skipped` is None."""
        raise NotImplementedError(f"family {self.name!r} writes no per-task model")


class Family(FamilyData, FamilyHead, FamilyLoss, FamilyEvaluation, FamilyExport):
    """A task family: its data, head, loss, evaluation and export parts (the classes above), each with one
    signature for every family. A built-in family's class lists every part it gives, in its body.

    Model outputs are whatever `head_outputs` returns (a tensor or a tuple of tensors); `loss`,
    `sym_kl`, `entropy` and `evaluate` read them.
    """

    name: str = ""
    roles: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())   # column roles read: (required, optional)
    target_roles: tuple[str, ...] = ("label",)                   # roles of gold targets (unlabeled splits lack them)
    targets: tuple[str, ...] = ("labels",)                       # batch keys that are targets, not inputs
    needs_encoder_decoder: bool = False                          # e.g. summarization: BART only
    decoder_reads_target: bool = False                           # BART's decoder reads batch["labels"]
    has_distribution: bool = True                                # MT-Uncertainty can score its entropy
    shared_head: bool = False                                    # ONE head serves all its tasks (not one each)
    auto_class: Optional[str] = None                             # transformers class of its per-task folders
    head_summary: str = ""                                       # for model cards: what the head is
    loss_summary: str = ""                                       # ... and the loss with its log(n)


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of softmax(logits) over the last dim, in fp32. Masked entries (large negative
    logits) have probability 0 and add nothing."""
    logp = torch.nn.functional.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def register_family(family: Family) -> Family:
    """Make a family known by its name (a second family of the same name is an error)."""
    if not family.name:
        raise ValueError(f"{type(family).__name__} has no name")
    known = _REGISTRY.get(family.name)
    if known is not None and type(known) is not type(family):
        raise ValueError(f"a family named {family.name!r} is registered already ({type(known).__name__})")
    _REGISTRY[family.name] = family
    return family


def _load_built_in() -> None:
    for name in BUILT_IN:
        if name not in _REGISTRY:
            import_module(f"prefinetune.families.{name}")      # each module registers its family


def get_family(name: str) -> Family:
    """The registered family of that name."""
    _load_built_in()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown task family {name!r}; known: {family_names()}") from None


def family_names() -> list[str]:
    """Registered families: the built-in ones first, in their fixed order, then others by registration."""
    _load_built_in()
    return list(_REGISTRY)
