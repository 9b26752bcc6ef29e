"""Which head a fine-tuning run starts from: the export's own head for the task where it has one
(Muppet reuses SQuAD's span head and the commonsense multiple-choice head), else a fresh one.

    source = head_source(recipe)            # HeadSource(export, entry) or None: what to reuse
    note = start_heads(model, recipe)       # copies it into the model's head; says what it did

Rules, from the export's tasks.json:
- a family with ONE shared head (multiple choice, span; summarization's decoder is the backbone):
  reused whenever the export has a task of that family;
- a head per dataset (classification, regression, tagging): the export's task of the same name (or
  `finetune.head_from`), of the same family with the same labels in the same order; other labels are
  an error that says to set `finetune.reuse_head=false`.
The head is copied exactly, so the starting model scores what the export scored on that task.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from prefinetune.families.family import get_family
from prefinetune.finetune.plan import FinetuneError
from prefinetune.model.source import resolve_model_source
from prefinetune.recipe.config import DEFAULT_HEAD_DIM

__all__ = ["HeadSource", "export_folder", "export_info", "head_source", "start_heads_note", "start_heads"]


@dataclass(frozen=True)
class HeadSource:
    export: Path
    entry: dict           # the export's tasks.json entry whose head is reused


def export_folder(name_or_path: str) -> Optional[Path]:
    """The folder when the model is a prefinetune export (it has tasks.json), else None (a plain model)."""
    from prefinetune.export.folder import TASKS_FILE

    folder = Path(resolve_model_source(name_or_path)).expanduser()
    return folder if (folder / TASKS_FILE).is_file() else None


def export_info(name_or_path: str) -> Optional[dict]:
    """tasks.json when the model is a prefinetune export folder, else None."""
    from prefinetune.export.folder import read_tasks_info

    folder = export_folder(name_or_path)
    return None if folder is None else read_tasks_info(folder)


def head_source(recipe) -> Optional[HeadSource]:
    """The export head the run's one task starts from, or None (a plain model, no match, reuse off)."""
    info = export_info(recipe.model.name_or_path)
    ft, task = recipe.finetune, recipe.tasks[0]
    if info is None or ft is None or not ft.reuse_head:
        return None
    entry = _matching_entry(info, task, ft.head_from, recipe.model.name_or_path)
    if entry is None:
        return None
    _check_r4f(info, recipe)
    _check_head_design(info, entry, recipe)
    _check_alignment(info, entry, recipe)
    return HeadSource(export_folder(recipe.model.name_or_path), entry)


def _matching_entry(info: dict, task, head_from: Optional[str], export: str) -> Optional[dict]:
    if get_family(task.family).shared_head:
        return next((t for t in info["tasks"] if t["family"] == task.family), None)
    wanted = head_from or task.name
    entry = next((t for t in info["tasks"] if t["name"] == wanted), None)
    if entry is None and head_from:
        raise FinetuneError(f"finetune.head_from={wanted!r}: the export {export} has no such task; it has "
                         f"{[t['name'] for t in info['tasks']]}")
    if entry is not None:
        _check_compatible(entry, task, export)
    return entry


def _check_compatible(entry: dict, task, export: str) -> None:
    if entry["family"] != task.family:
        raise FinetuneError(f"the export {export}'s task {entry['name']!r} is {entry['family']}, task {task.name!r} is "
                         f"{task.family}: its head cannot be reused (set finetune.reuse_head=false or head_from)")
    labels = list(task.label_names) if task.label_names else None
    if entry["num_labels"] != task.num_labels or (entry["label_names"] or None) != labels:
        raise FinetuneError(f"the export {export}'s head for {entry['name']!r} has labels {entry['label_names']} "
                         f"({entry['num_labels']} outputs); task {task.name!r} has {labels} ({task.num_labels}): "
                         "reuse needs the same labels in the same order (or set finetune.reuse_head=false)")


def start_heads_note(recipe) -> str:
    """Which head the run's task starts from, in words."""
    task, source = recipe.tasks[0], head_source(recipe)
    if source is not None:
        return f"{task.name} starts from the export's {task.family} head of {source.entry['name']!r}"
    reason = ("reuse is off" if recipe.finetune is not None and not recipe.finetune.reuse_head else
              "the model is not a prefinetune export" if export_info(recipe.model.name_or_path) is None
              else "the export has no head for it")
    return f"{task.name} starts from a fresh {task.family} head ({reason})"


def start_heads(model, recipe) -> str:
    """Copy the reused head into `model` (built for the recipe's one task), and its task's alignment matrix
    where both have one (model.alignment: per_task; a new task's starts at the identity, as in Wu et al.'s
    transfer); what was done, in words."""
    from safetensors.torch import load_file

    from prefinetune.export.folder import HEADS_FILE

    task, source = recipe.tasks[0], head_source(recipe)
    if source is not None:
        tensors = load_file(str(source.export / HEADS_FILE))
        prefix = f"{task.family}."
        saved = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        head = getattr(model, task.family)
        if "head_group" in source.entry:       # an attention head (model.head: attention)
            head.copy_task(saved, source.entry["head_group"], source.entry["head_row"])
        else:
            get_family(task.family).copy_head(head, saved, source.entry["family_index"])
        if model.alignment_at is not None and "alignment.weight" in tensors:
            with torch.no_grad():
                model.alignment.weight[0].copy_(tensors["alignment.weight"][source.entry["head_index"]])
    return start_heads_note(recipe)


def _check_r4f(info: dict, recipe) -> None:
    """A reused head computes the export's function only under the same spectral normalisation."""
    if bool(info["model"].get("spectral_norm")) != recipe.r3f.spectral_norm:
        raise FinetuneError(f"the export {recipe.model.name_or_path} was trained with r3f.spectral_norm="
                         f"{bool(info['model'].get('spectral_norm'))}; reusing its head needs the same setting "
                         f"(r3f.spectral_norm={recipe.r3f.spectral_norm} here), or finetune.reuse_head=false")


def _check_head_design(info: dict, entry: dict, recipe) -> None:
    """A reused classification/regression head is rebuilt in the export's design: fc, or an attention head of
    the export's width and attention heads (model.head, model.head_dim, model.head_attention_heads)."""
    if not get_family(entry["family"]).task_bank:
        return
    m, task = recipe.model, recipe.tasks[0]
    theirs = ("attention", entry["head_dim"], info["model"]["head_attention_heads"]) if "head_dim" in entry else ("fc",)
    width = m.head_dim.get(task.name) if isinstance(m.head_dim, dict) else m.head_dim or DEFAULT_HEAD_DIM
    mine = ("attention", width, m.head_attention_heads or 1) if m.head == "attention" else ("fc",)
    if mine != theirs:
        wanted = ("model.head=fc (the default)" if theirs[0] == "fc" else
                  f"model.head=attention model.head_dim={theirs[1]} model.head_attention_heads={theirs[2]}")
        raise FinetuneError(f"the export {recipe.model.name_or_path}'s head for {entry['name']!r} is "
                            f"{_design(theirs)}, this recipe builds {_design(mine)}: reusing it needs {wanted} "
                            "(or finetune.reuse_head=false)")


def _design(design: tuple) -> str:
    if design[0] == "fc":
        return "an fc head"
    return f"an attention head of width {design[1]}, {design[2]} attention head(s)"


def _check_alignment(info: dict, entry: dict, recipe) -> None:
    """A reused head reads features through its task's alignment matrix where the export has one: the
    fine-tuning model needs the same alignment, at the same place, to compute what the export computes."""
    theirs = info["model"].get("alignment_at")
    m = recipe.model
    mine = m.alignment_at if m.alignment == "per_task" else None
    if theirs is not None and mine != theirs:
        raise FinetuneError(f"the export {m.name_or_path} aligns {entry['name']!r}'s features with its own matrix "
                            f"(model.alignment: per_task at {theirs}); reusing its head needs model.alignment=per_task "
                            f"model.alignment_at={theirs} (or finetune.reuse_head=false)")
