"""The export folder: a Hugging Face backbone + the head bank + per-task classifiers + tasks.json.

    out = export_from_checkpoint("runs/muppet/checkpoints", recipe, "runs/muppet/export")
    model, info = load_exported(out)          # the MultiTaskModel again, for downstream runs

Layout (weights only as safetensors):
    config.json, model.safetensors, tokenizer files   AutoModel.from_pretrained(out) loads the backbone
    heads.safetensors                                  the stacked head bank (classification.*)
    tasks.json                                         tasks, labels, head index, per-task folder
    README.md                                          model card
    tasks/<name>/                                      a stock AutoModelFor* (tasks.json: auto_class), where exact
                                                       and asked for (export.task_folders); its backbone weights
                                                       one file hard-linked across tasks (shared_weights.py)

    add_task_folders(out, ["mnli"])          # per-task folders written later into an export (the card's
                                             # task table and loading example are rendered again)
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from prefinetune import __version__
from prefinetune.export.card import model_card, refresh_card
from prefinetune.export.checkpoint import locate_checkpoint, state_dict_from_checkpoint
from prefinetune.export.shared_weights import BACKBONE_FILE, Shared, load_shared, readable_files, share_backbone
from prefinetune.families.family import get_family
from prefinetune.model.multitask import AttentionHeads, MultiTaskModel, TaskSpec, build_model, with_head_widths
from prefinetune.model.source import NO_HUB_KERNELS, load_tokenizer
from prefinetune.recipe.config import RecipeConfig, recipe_from_dict
from prefinetune.run.best_effort import failure_reason, warn

__all__ = ["EXPORT_FORMAT", "export_model", "export_from_checkpoint", "load_exported", "add_task_folders"]

EXPORT_FORMAT = "prefinetune-export/1"
HEADS_FILE = "heads.safetensors"
TASKS_FILE = "tasks.json"
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def export_from_checkpoint(checkpoint_dir: str | Path, recipe: RecipeConfig | dict, out_dir: str | Path,
                           backbone: torch.nn.Module | None = None, *, tag: str | None = None,
                           metrics: dict | None = None, exported: dict | None = None,
                           shape: Callable | None = None, unshape: Callable | None = None) -> Path:
    """Export the model a DeepSpeed checkpoint holds; `backbone` replaces the recipe's starting one;
    `metrics` (that checkpoint's `{split}/{task}/{metric}`) go into the model card, `exported` ({update,
    why}: which checkpoint this is and why) into tasks.json and the card. `shape(model, recipe)` gives the
    model the structure it was trained in (e.g. LoRA adapters), `unshape(model, recipe)` takes it back
    once the weights are loaded (merging them) and returns a writer of extra files, or None."""
    recipe = _trained_widths(_as_recipe(recipe), checkpoint_dir, tag)
    model = build_model(recipe, backbone)
    if shape is not None:
        shape(model, recipe)
    state = state_dict_from_checkpoint(checkpoint_dir, tag)
    _keep_fp32_frozen(model, state)
    model.load_state_dict(state, strict=True)
    extra = unshape(model, recipe) if unshape is not None else None
    m = recipe.model
    tokenizer = load_tokenizer(m.name_or_path, m.revision, m.trust_remote_code)
    return export_model(model, tokenizer, out_dir, recipe, metrics, exported, extra)


def _trained_widths(recipe: RecipeConfig, checkpoint_dir, tag: str | None) -> RecipeConfig:
    """A recipe with model.head_dim dypa takes the widths the checkpoint's run resolved (its recorded recipe),
    not ones recomputed from whatever shards are there now."""
    if recipe.model.head != "attention" or recipe.model.head_dim != "dypa":
        return recipe
    from prefinetune.distributed.reshard import model_states

    root, tag = locate_checkpoint(Path(checkpoint_dir), tag)
    saved = (model_states(root, tag).get("recipe") or {}).get("model", {}).get("head_dim")
    if not isinstance(saved, dict):
        raise ValueError(f"model.head_dim dypa: the checkpoint {root / tag} does not record the widths its run used; "
                         "give them as model.head_dim={task: width, ...} (the run's recipe.json has them)")
    return with_head_widths(recipe, saved)


def export_model(model: MultiTaskModel, tokenizer, out_dir: str | Path, recipe: RecipeConfig | dict,
                 metrics: dict | None = None, exported: dict | None = None,
                 extra: Callable[[Path], dict] | None = None) -> Path:
    """Write the export folder (tensors in the model's dtype: fp32 from export_from_checkpoint); `extra`
    writes more files into it (e.g. a LoRA adapter) and returns what tasks.json adds. An earlier export in
    out_dir is replaced; any other non-empty folder is refused."""
    from safetensors.torch import save_file

    recipe, out = _as_recipe(recipe), Path(out_dir)
    _check_tasks_match(model, recipe)
    stage = _staging_dir(out)
    model.backbone.save_pretrained(stage)
    tokenizer.save_pretrained(stage)
    heads = {k: v.detach().cpu().contiguous() for k, v in head_state_dict(model).items()}
    save_file(heads, str(stage / HEADS_FILE), metadata={"format": "pt"})
    info = tasks_info(model, recipe)
    if exported:
        info["exported"] = exported
    if extra is not None:
        info.update(extra(stage))
    shared = None
    for task in info["tasks"]:
        if task["folder"]:
            shared = _write_task_folder(model, tokenizer, recipe.model.head_dropout, task, stage, shared)
    _write_tasks_info(stage, info)
    (stage / "README.md").write_text(model_card(info, recipe, metrics), encoding="utf-8")
    _check_no_pickles(stage)
    readable_files(stage)
    if out.exists():
        shutil.rmtree(out)
    stage.rename(out)
    return out


def load_exported(out_dir: str | Path, trust_remote_code: bool = False) -> tuple[MultiTaskModel, dict[str, Any]]:
    """The MultiTaskModel (in eval mode) and the parsed tasks.json of an export folder."""
    from safetensors.torch import load_file
    from transformers import AutoModel

    out = Path(out_dir)
    info = read_tasks_info(out)
    backbone = AutoModel.from_pretrained(out, trust_remote_code=trust_remote_code, **NO_HUB_KERNELS)
    tasks = sorted(info["tasks"], key=lambda t: t["head_index"])
    heads = [TaskSpec(t["name"], t["family"], t["num_labels"]) for t in tasks]
    attention = None
    if info["model"].get("head", "fc") == "attention":
        attention = AttentionHeads({t["name"]: t["head_dim"] for t in tasks if "head_dim" in t},
                                   info["model"]["head_attention_heads"])
    model = MultiTaskModel(backbone, heads, info["model"]["head_dropout"],
                           spectral_norm=info["model"].get("spectral_norm", False),
                           shared_dense=info["model"].get("head_dense", "per_task") == "shared", attention=attention,
                           alignment_at=info["model"].get("alignment_at"), **_camtl_from(info["model"]))
    saved = load_file(str(out / HEADS_FILE))
    expected = head_state_dict(model)
    if saved.keys() != expected.keys():
        raise ValueError(f"{out / HEADS_FILE} holds {sorted(saved)}, the tasks need {sorted(expected)}")
    model.load_state_dict(saved, strict=False)
    return model.eval(), info


def head_state_dict(model: MultiTaskModel) -> dict[str, torch.Tensor]:
    """Every tensor of the model outside the backbone: the heads of all families, by module name."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}


def _camtl_from(model_info: dict) -> dict:
    """MultiTaskModel's CA-MTL arguments from tasks.json: its spec, and the length its attention blocks span."""
    if model_info.get("conditioning", "none") != "camtl":
        return {}
    from prefinetune.recipe.config import CamtlSection

    spec = CamtlSection(**model_info["camtl"])
    return {"camtl": spec, "max_length": model_info["camtl_block"] * spec.attention_blocks}


def read_tasks_info(out_dir: str | Path) -> dict[str, Any]:
    """tasks.json of an export folder, checked to be one."""
    path = Path(out_dir) / TASKS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir} is not a prefinetune export: it has no {TASKS_FILE}")
    info = json.loads(path.read_text(encoding="utf-8"))
    if info.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: format {info.get('format')!r}, expected {EXPORT_FORMAT!r}")
    return info


def tasks_info(model: MultiTaskModel, recipe: RecipeConfig) -> dict[str, Any]:
    """What tasks.json holds: the model's source and, per task, its labels, head and folder."""
    model_type = model.backbone.config.model_type
    tasks = []
    for i, head in enumerate(model.tasks):
        labels = recipe.task(head.name).label_names
        skipped = (get_family(head.family).task_folder_skipped(model_type) or _no_stock_head(model, head)
                   or _not_asked(recipe, head.name))
        tasks.append({"name": head.name, "family": head.family, "label_names": list(labels) if labels else None,
                      "num_labels": head.num_labels, "head_index": i, "family_index": head.family_index,
                      "folder": None if skipped else f"tasks/{head.name}", "folder_skipped": skipped,
                      "auto_class": None if skipped else get_family(head.family).auto_class,
                      **_attention_place(model, head)})
    m = recipe.model
    design = {"head": "fc"} if model.attention is None else {"head": "attention",
                                                              "head_attention_heads": model.attention.heads}
    return {"format": EXPORT_FORMAT, "prefinetune_version": __version__,
            "model": {"name_or_path": public_model_name(m.name_or_path), "revision": m.revision,
                      "model_type": model_type, "hidden_size": model.backbone.config.hidden_size,
                      "max_length": m.max_length, "head_dropout": m.head_dropout,
                      "spectral_norm": model.spectral_norm,
                      "head_dense": "shared" if model.shared_dense else "per_task", **design,
                      "alignment": "none" if model.alignment_at is None else "per_task",
                      "alignment_at": model.alignment_at, **_conditioning(model)},
            "heads": {"file": HEADS_FILE, "head": "classification/regression/multiple_choice: first token (BART: "
                      "last token) -> dropout -> dense -> tanh -> dropout -> out_proj, tensors "
                      "<family>.{dense_weight,dense_bias,out_weight,out_bias}[family_index]; span: span.{weight,bias} "
                      "(start, end logits per token); summarization: the backbone's tied LM head; with model.head "
                      "attention, classification/regression: tokens -> dropout -> in (d_t) -> self-attention (qkv, o) "
                      "-> mean over real tokens -> dropout -> out, tensors <family>.groups.<head_group>."
                      "{in,qkv,o,out}_{weight,bias}[head_row] (prefinetune/model/attention_heads.py); with "
                      "model.alignment per_task, alignment.weight[head_index], task t's H x H matrix R_t "
                      "(x @ R_t on alignment_at: its input word embeddings or "
                      "the backbone's final states; prefinetune/model/alignment.py)"},
            "tasks": tasks}


def _conditioning(model: MultiTaskModel) -> dict:
    if model.conditioning is None:
        return {"conditioning": "none"}
    return {"conditioning": "camtl", "camtl": model.camtl.model_dump(mode="json"),
            "camtl_frozen_layers": model.conditioning.frozen, "camtl_block": model.conditioning.block}


def _attends(model: MultiTaskModel, head: TaskSpec) -> bool:
    return model.attention is not None and get_family(head.family).task_bank


def _no_stock_head(model: MultiTaskModel, head: TaskSpec) -> str | None:
    if model.conditioning is not None:
        return ("the backbone is CA-MTL-conditioned by task (model.conditioning: camtl), which no stock "
                "transformers class holds; prefinetune.export.load_exported reproduces it")
    if model.alignment_at is not None:
        return (f"its {'input embeddings' if model.alignment_at == 'embeddings' else 'final states'} pass through "
                "the task's alignment matrix (model.alignment: per_task), which no stock transformers class holds; "
                "prefinetune.export.load_exported reproduces it")
    if _attends(model, head):
        return ("its head is an attention head (model.head: attention), which no stock transformers class holds; "
                "prefinetune.export.load_exported reproduces it")
    return None


def _attention_place(model: MultiTaskModel, head: TaskSpec) -> dict:
    """An attention head's width and where it lies in heads.safetensors (<family>.groups.<group>.*[row])."""
    if not _attends(model, head):
        return {}
    bank = getattr(model, head.family)
    group, row = bank.place[head.family_index]
    return {"head_dim": bank.widths[head.family_index], "head_group": group, "head_row": row}


def public_model_name(name_or_path: str) -> str:
    """The recipe's model name as the export states it: a local path is reduced to its folder name."""
    if not name_or_path.startswith("pkg:") and Path(name_or_path).expanduser().exists():
        return f"local:{Path(name_or_path).expanduser().resolve().name}"
    return name_or_path


def _write_task_folder(model, tokenizer, head_dropout: float, task: dict, stage: Path, shared: Shared | None):
    """The task's AutoModelFor* folder (the family builds the model), its backbone weights linked to
    `shared` (returns the backbone file the next folder shares): an extra, so a failure leaves the
    backbone export whole, takes the partial folder away and says why in tasks.json and one warning."""
    folder = stage / task["folder"]
    try:
        task_model = get_family(task["family"]).task_model(model, task, head_dropout)
        task_model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return share_backbone(folder, task_model.base_model_prefix, shared)
    except Exception as err:   # noqa: BLE001 - optional by design; recorded and warned
        shutil.rmtree(folder, ignore_errors=True)
        task["folder"], task["folder_skipped"] = None, f"writing it failed ({failure_reason(err)})"
        task["auto_class"] = None
        warn(f"the per-task folder of {task['name']!r} was not written: {task['folder_skipped']}; "
             f"its head is in {HEADS_FILE}")
        return shared


def add_task_folders(out_dir: str | Path, names: list[str]) -> list[str]:
    """Write the per-task folders of `names` into an export that lacks them (export.task_folders), their
    backbone weights linked to the folders already there; returns the folders written. tasks.json is
    updated; a task with no exact stock class is refused with the reason."""
    out = Path(out_dir)
    model, info = load_exported(out)
    by_name = {t["name"]: t for t in info["tasks"]}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"{out} has no tasks {unknown}; its tasks: {sorted(by_name)}")
    model_type = info["model"]["model_type"]
    for name in names:
        head = model.tasks[by_name[name]["head_index"]]
        reason = get_family(head.family).task_folder_skipped(model_type) or _no_stock_head(model, head)
        if reason:
            raise ValueError(f"task {name!r} gets no per-task folder: {reason}")
    tokenizer = load_tokenizer(str(out))
    # the backbone file to share: one of a folder that stays (a folder asked for again is rewritten)
    staying = sorted(p for p in out.glob(f"tasks/*/{BACKBONE_FILE}") if p.parent.name not in names)
    shared = load_shared(staying[0]) if staying else None
    written = []
    for name in names:
        task = by_name[name]
        task.update(folder=f"tasks/{name}", folder_skipped=None, auto_class=get_family(task["family"]).auto_class)
        shutil.rmtree(out / task["folder"], ignore_errors=True)
        shared = _write_task_folder(model, tokenizer, info["model"]["head_dropout"], task, out, shared)
        if task["folder"]:
            written.append(task["folder"])
            readable_files(out / task["folder"])
    _write_tasks_info(out, info)
    card = out / "README.md"
    if card.is_file():
        text = refresh_card(card.read_text(encoding="utf-8"), info)
        if text is None:
            warn(f"{card} has no '## Tasks' and '## How to load' sections to rewrite: the card is left as it is "
                 "(tasks.json lists the new folders)")
        else:
            card.write_text(text, encoding="utf-8")
    return written


def _write_tasks_info(folder: Path, info: dict) -> None:
    (folder / TASKS_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _not_asked(recipe: RecipeConfig, name: str) -> str | None:
    asked = recipe.export.task_folders
    if asked == "all" or (isinstance(asked, list) and name in asked):
        return None
    return f"not asked for (export.task_folders={asked}); prefinetune task-folders EXPORT TASK writes it"


def _keep_fp32_frozen(model: MultiTaskModel, state: dict[str, torch.Tensor]) -> None:
    """Frozen parameters never change, but a bf16/fp16 run checkpoints them only in that dtype. Where
    the checkpoint holds exactly the rounding of the model's starting value, keep the fp32 start."""
    for name, param in model.named_parameters():
        saved = state.get(name)
        if param.requires_grad or saved is None or torch.equal(saved, param.detach()):
            continue
        if any(torch.equal(saved, param.detach().to(low).float()) for low in (torch.bfloat16, torch.float16)):
            state[name] = param.detach().clone()


def _check_tasks_match(model: MultiTaskModel, recipe: RecipeConfig) -> None:
    got = [(t.name, t.num_labels) for t in model.tasks]
    want = [(t.name, t.num_labels) for t in recipe.tasks]
    if got != want:
        raise ValueError(f"the model's tasks {got} are not the recipe's {want}")


def _staging_dir(out: Path) -> Path:
    """An empty sibling folder to write into; `out` may be replaced only if it is an earlier export."""
    if out.exists() and any(out.iterdir()) and not (out / TASKS_FILE).is_file():
        raise FileExistsError(f"{out} is not empty and holds no earlier export ({TASKS_FILE}): not replacing it")
    stage = out.parent / f".{out.name}.partial"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    return stage


def pickled_files(folder: Path) -> list[str]:
    """Files of the folder that hold pickled weights (which this project never writes or uploads)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix in PICKLED_SUFFIXES)


def _check_no_pickles(folder: Path) -> None:
    found = pickled_files(folder)
    if found:
        raise RuntimeError(f"export {folder} holds pickled weights {found}; only safetensors may be written")


def _as_recipe(recipe: RecipeConfig | dict) -> RecipeConfig:
    return recipe if isinstance(recipe, RecipeConfig) else recipe_from_dict(recipe)
