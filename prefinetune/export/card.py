"""The README.md model card of an export folder: what the model is, its tasks, how to load it.

It is built from tasks.json and the recipe's training settings only (no data paths, no tokens).
"""
from __future__ import annotations

from typing import Any

__all__ = ["model_card"]

_MUPPET = "[Aghajanyan et al., 2021](https://arxiv.org/abs/2101.11038)"


def model_card(info: dict[str, Any], recipe) -> str:
    """Markdown with YAML front matter for the hub."""
    return "\n".join([_front_matter(info), _about(info, recipe), _task_table(info), _usage(info), ""])


def _front_matter(info: dict[str, Any]) -> str:
    base = info["model"]["name_or_path"]
    lines = ["---", "library_name: transformers", "tags:", "- prefinetune", "- multi-task", "- pre-finetuning"]
    if "/" in base and not base.startswith(("pkg:", "local:")):
        lines.append(f"base_model: {base}")
    return "\n".join(lines + ["---", ""])


def _about(info: dict[str, Any], recipe) -> str:
    m, t, ds = info["model"], recipe.train, recipe.deepspeed
    return "\n".join([
        f"# {recipe.run.name}", "",
        f"A `{m['model_type']}` encoder (from `{m['name_or_path']}`) pre-finetuned with prefinetune: "
        f"Muppet-style multi-task learning ({_MUPPET}) on {len(info['tasks'])} tasks. Every task has its "
        "own classification head (first token -> dense -> tanh -> dropout -> out_proj) on the shared "
        "encoder, and losses are scaled by 1/log(number of classes).", "",
        f"Training: {t.updates} updates of {t.slots_per_update} single-task micro-batches of {t.batch_size} rows, "
        f"`{recipe.sampling.policy}` task sampling, lr {recipe.optim.lr}, DeepSpeed ZeRO-{ds.zero_stage}, "
        f"precision `{ds.precision}`, max length {m['max_length']} tokens.", ""])


def _task_table(info: dict[str, Any]) -> str:
    rows = ["## Tasks", "", "| task | family | labels | head | per-task folder |", "| --- | --- | --- | --- | --- |"]
    for task in info["tasks"]:
        folder = f"`{task['folder']}`" if task["folder"] else "none"
        rows.append(f"| {task['name']} | {task['family']} | {', '.join(task['label_names'] or ['-'])} | "
                    f"{task['head_index']} | {folder} |")
    skipped = next((t["folder_skipped"] for t in info["tasks"] if t["folder_skipped"]), None)
    if skipped:
        rows += ["", f"No per-task folders: {skipped}."]
    return "\n".join(rows + [""])


def _usage(info: dict[str, Any]) -> str:
    example = next((t["folder"] for t in info["tasks"] if t["folder"]), None)
    code = ["```python", "from transformers import AutoModel, AutoTokenizer",
            'encoder = AutoModel.from_pretrained("REPO_OR_FOLDER")          # the shared encoder',
            'tokenizer = AutoTokenizer.from_pretrained("REPO_OR_FOLDER")']
    if example:
        code += ["from transformers import AutoModelForSequenceClassification",
                 f'clf = AutoModelForSequenceClassification.from_pretrained("REPO_OR_FOLDER", subfolder="{example}")']
    code += ["", "# the whole multi-task model (encoder + all heads), with prefinetune installed:",
             "from prefinetune.export import load_exported", 'model, info = load_exported("FOLDER")',
             'logits = model(model.task_id("TASK"), **tokenizer(["some text"], return_tensors="pt"))', "```"]
    return "\n".join(["## How to load", "",
                      "`heads.safetensors` holds all task heads stacked (row = head index in `tasks.json`).",
                      ""] + code)
