"""Fine-tuning from a CA-MTL export (`model.conditioning: camtl`, prefinetune/model/camtl.py): the export's
backbone was trained through its task conditioning, so the fine-tuning model is built with the same
conditioning and starts from the export's: every shared part as it is, and for the task's embedding z the
task's own where the export has it (by name, or finetune.head_from), else `finetune.task_embedding_from`:
a task of the export, or `mean`, the mean of its trained embeddings (CA-MTL's options for a new task); unset
for a new multiple-choice or span task, the mean of the export's tasks of that family, whose one shared head
the task reuses.

    check_conditioning(recipe)              # before anything starts: the same conditioning, a known source
    note = start_conditioning(model, recipe)
"""
from __future__ import annotations

import torch

from prefinetune.families.family import get_family
from prefinetune.finetune.head_reuse import export_folder, export_info
from prefinetune.finetune.plan import FinetuneError
from prefinetune.model.multitask import camtl_spec

__all__ = ["check_conditioning", "start_conditioning", "embedding_source"]


def check_conditioning(recipe) -> None:
    """A CA-MTL export needs the same model.conditioning and model.camtl here; task_embedding_from must name
    one of its tasks (or mean); without a CA-MTL export, task_embedding_from has nothing to read."""
    info, m, ft = export_info(recipe.model.name_or_path), recipe.model, recipe.finetune
    theirs = info["model"].get("camtl") if info and info["model"].get("conditioning") == "camtl" else None
    if theirs is None:
        if ft.task_embedding_from is not None:
            raise FinetuneError(f"finetune.task_embedding_from={ft.task_embedding_from!r} picks a CA-MTL task "
                                f"embedding; {m.name_or_path} is not a CA-MTL export (model.conditioning: camtl)")
        return
    spec = camtl_spec(m)
    mine = spec.model_dump(mode="json") if spec is not None else None
    if mine != theirs:
        keys = " ".join(f"model.camtl.{k}={v}" for k, v in theirs.items())
        raise FinetuneError(f"the export {m.name_or_path} is CA-MTL-conditioned ({theirs}); its backbone computes "
                            f"what it learned only through that conditioning: fine-tuning it needs "
                            f"model.conditioning=camtl {keys}")
    span = info["model"]["camtl_block"] * theirs["attention_blocks"]
    if -(-m.max_length // theirs["attention_blocks"]) != info["model"]["camtl_block"]:
        raise FinetuneError(f"the export {m.name_or_path}'s conditional attention spans {span} positions "
                            f"({theirs['attention_blocks']} blocks of {info['model']['camtl_block']}); its blocks are "
                            f"sized by model.max_length, so fine-tuning it needs model.max_length={span} "
                            f"(this recipe has {m.max_length})")
    embedding_source(info, recipe)


def embedding_source(info: dict, recipe) -> list[int]:
    """The export's task indices whose embeddings' mean the task starts from: finetune.task_embedding_from's
    task (all of them for 'mean'); by default the task's own (by name or finetune.head_from), else, in a family
    whose tasks share one head (multiple choice, span), the export's tasks of that family (the shared head it
    may reuse was trained on their conditioning), else all of them (the mean)."""
    names = {t["name"]: t["head_index"] for t in info["tasks"]}
    ft, task = recipe.finetune, recipe.tasks[0]
    wanted = ft.task_embedding_from
    if wanted not in (None, "mean") and wanted not in names:
        raise FinetuneError(f"finetune.task_embedding_from={wanted!r}: the export {recipe.model.name_or_path} has no "
                            f"such task; it has {sorted(names)} (or use 'mean')")
    if ft.head_from is not None and ft.head_from not in names:
        raise FinetuneError(f"finetune.head_from={ft.head_from!r}: the export {recipe.model.name_or_path} has no such "
                            f"task; it has {sorted(names)}")
    if wanted == "mean":
        return sorted(names.values())
    own = wanted or ft.head_from or task.name
    if own in names:
        return [names[own]]
    family = [t["head_index"] for t in info["tasks"] if t["family"] == task.family]
    return family if family and get_family(task.family).shared_head else sorted(names.values())


def start_conditioning(model, recipe) -> str | None:
    """Copy the export's conditioning into `model` (built for the recipe's one task); what was done, or None."""
    from safetensors.torch import load_file

    from prefinetune.export.folder import HEADS_FILE

    info = export_info(recipe.model.name_or_path)
    if model.conditioning is None or info is None or info["model"].get("conditioning") != "camtl":
        return None
    saved = {k[len("conditioning."):]: v for k, v in load_file(str(export_folder(recipe.model.name_or_path) /
                                                                     HEADS_FILE)).items()
             if k.startswith("conditioning.")}
    source = embedding_source(info, recipe)
    table = saved.pop("task_embedding")
    with torch.no_grad():
        model.conditioning.load_state_dict({**saved, "task_embedding": model.conditioning.task_embedding.detach()},
                                           strict=True)
        model.conditioning.task_embedding[0].copy_(table[source].mean(dim=0))
    return (f"CA-MTL conditioning from the export; {recipe.tasks[0].name}'s task embedding starts from "
            f"{_which(info, source)}")


def _which(info: dict, source: list[int]) -> str:
    names = [t["name"] for t in info["tasks"] if t["head_index"] in source]
    if len(names) == 1:
        return f"the export's embedding of {names[0]!r}"
    return ("the mean of the export's task embeddings" if len(names) == len(info["tasks"])
            else f"the mean of the export's embeddings of {names}")
