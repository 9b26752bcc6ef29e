"""The README.md model card of an export folder: what the model is, its tasks, how each is served, how
it was trained, its per-task dev metrics and how to load it.

It is built from the export's own tasks.json, the recipe and the run's final metrics only (no data
paths, no tokens), so what it says of heads and loss scaling is what the run did.
"""
from __future__ import annotations

from typing import Any

from prefinetune.families.family import get_family

__all__ = ["model_card", "refresh_card"]

_MUPPET = "[Aghajanyan et al., 2021](https://arxiv.org/abs/2101.11038)"

def model_card(info: dict[str, Any], recipe, metrics: dict[str, float] | None = None) -> str:
    """Markdown with YAML front matter for the hub; `metrics` = the run's final `{split}/{task}/{metric}`."""
    return "\n".join([_front_matter(info), _about(info, recipe), _task_table(info),
                      _metrics_table(info, recipe.eval.split, metrics or {}), _usage(info), ""])


def refresh_card(card: str, info: dict[str, Any]) -> str | None:
    """The card with its task table and loading example rendered again from `info` (per-task folders added
    to the export later); the rest, written from the run's recipe and metrics, is kept as it was. None
    when the card lacks those sections (edited by hand)."""
    if "## Tasks\n" not in card or "## How to load\n" not in card.split("## Tasks\n", 1)[1]:
        return None
    start, usage = card.index("## Tasks\n"), card.index("## How to load\n")
    end = card.index("\n## ", start) + 1
    return card[:start] + _task_table(info) + "\n" + card[end:usage] + _usage(info) + "\n"


def _front_matter(info: dict[str, Any]) -> str:
    base = info["model"]["name_or_path"]
    lines = ["---", "library_name: transformers", "tags:", "- prefinetune", "- multi-task", "- pre-finetuning"]
    if "/" in base and not base.startswith(("pkg:", "local:")):
        lines.append(f"base_model: {base}")
    return "\n".join(lines + ["---", ""])


def _about(info: dict[str, Any], recipe) -> str:
    m, t, ds, r3f = info["model"], recipe.train, recipe.deepspeed, recipe.r3f
    families = sorted({task["family"] for task in info["tasks"]})
    rows = {None: f"{t.batch_size} random rows",
            "auto": f"{t.batch_size} rows on average, batched by length"}.get(t.token_budget,
                                                                                f"up to {t.token_budget} tokens")
    reg = "off" if not r3f.enabled else (f"R{'4' if r3f.spectral_norm else '3'}F, weight {r3f.weight}, "
                                        f"sigma {r3f.sigma}, {r3f.noise} noise")
    return "\n".join([
        f"# {recipe.run.name}", "",
        f"A `{m['model_type']}` backbone (from `{m['name_or_path']}`) pre-finetuned with prefinetune: "
        f"Muppet-style multi-task learning ({_MUPPET}) on {len(info['tasks'])} tasks of "
        f"{len(families)} {'family' if len(families) == 1 else 'families'} ({', '.join(families)}).", "",
        f"Training: {t.updates} updates, each of {t.slots_per_update} single-task micro-batches of {rows}; "
        f"`{recipe.sampling.policy}` task sampling (`{recipe.sampling.strategy}`); AdamW lr {recipe.optim.lr}; "
        f"R3F/R4F {reg}; DeepSpeed ZeRO-{ds.zero_stage}, precision `{ds.precision}`; "
        f"max length {m['max_length']} tokens.", "",
        *([f"Exported: {info['exported']['why']}.", ""] if info.get("exported") else []),
        *([_lora_line(info["lora"]), ""] if info.get("lora") else []),
        *([_attention_line(info), ""] if m.get("head") == "attention" else []),
        *([_alignment_line(info), ""] if m.get("alignment") == "per_task" else []),
        *([_camtl_line(info), ""] if m.get("conditioning") == "camtl" else []),
        "## Heads and losses", "",
        "| family | head | loss |", "| --- | --- | --- |",
        *(f"| {f} | {get_family(f).head_summary} | {get_family(f).loss_summary} |" for f in families), ""])


def _attention_line(info: dict[str, Any]) -> str:
    widths = sorted({t["head_dim"] for t in info["tasks"] if "head_dim" in t})
    return (f"Classification and regression heads: low-dimensional attention heads (Wolfe & Lundgaard 2022; "
            f"`model.head: attention`), widths {', '.join(map(str, widths))}, "
            f"{info['model']['head_attention_heads']} attention head(s) each; no stock transformers class holds "
            "them, `prefinetune.export.load_exported` does.")


def _camtl_line(info: dict[str, Any]) -> str:
    spec = info["model"]["camtl"]
    parts = [name.replace("conditional_", "") for name in ("conditional_attention", "conditional_alignment",
                                                            "conditional_layer_norm", "conditional_bottleneck")
             if spec[name]]
    return (f"CA-MTL's task-conditioned transformer (Pilault et al. 2021; `model.conditioning: camtl`): a task "
            f"embedding of {spec['task_embedding_dim']} modulates the layers above the "
            f"{info['model']['camtl_frozen_layers']} frozen ones (conditional {', '.join(parts) or 'nothing'}; "
            "`conditioning.*` in `heads.safetensors`). `AutoModel.from_pretrained` gives the backbone without its "
            "conditioning, which is not the trained model: `prefinetune.export.load_exported` is.")


def _alignment_line(info: dict[str, Any]) -> str:
    where = ("input word embeddings" if info["model"]["alignment_at"] == "embeddings"
             else "final states (BART: the decoder's)")
    return (f"Covariance alignment (Wu, Zhang & Ré 2020; `model.alignment: per_task`): each task's {where} pass "
            "through its own H x H matrix (`alignment.weight` in `heads.safetensors`); no stock transformers class "
            "holds it, `prefinetune.export.load_exported` does.")


def _lora_line(lora: dict[str, Any]) -> str:
    return (f"Fine-tuned with LoRA (r {lora['r']}, alpha {lora['alpha']:g}, on {', '.join(lora['target_modules'])}): "
            f"the adapters are merged into this backbone; the adapter alone is in `{lora['folder']}/`.")


def _task_table(info: dict[str, Any]) -> str:
    rows = ["## Tasks", "", "| task | family | labels | head index | per-task folder |",
            "| --- | --- | --- | --- | --- |"]
    for task in info["tasks"]:
        folder = f"`{task['folder']}`" if task["folder"] else "none"
        labels = ", ".join(task["label_names"]) if task["label_names"] else "-"
        rows.append(f"| {task['name']} | {task['family']} | {labels} | {task['head_index']} | {folder} |")
    skipped = sorted({t["folder_skipped"] for t in info["tasks"] if t["folder_skipped"]})
    if skipped:
        rows += ["", "Tasks without a per-task folder: " + "; ".join(skipped) + "."]
    return "\n".join(rows + [""])


def _metrics_table(info: dict[str, Any], split: str, metrics: dict[str, float]) -> str:
    """Every task's final metrics on `split`, as the run measured them."""
    per_task = {task["name"]: {k.split("/")[2]: v for k, v in metrics.items()
                               if k.count("/") == 2 and k.startswith(f"{split}/{task['name']}/")}
                for task in info["tasks"]}
    names = sorted({n for scores in per_task.values() for n in scores if n != "rows"})
    if not names:
        return "\n".join(["## Final metrics", "", "None recorded with this export.", ""])
    rows = [f"## Final metrics ({split} split)", "", "| task | " + " | ".join(names) + " | rows |",
            "| --- |" + " --- |" * (len(names) + 1)]
    for task, scores in per_task.items():
        cells = [f"{scores[n]:.4f}" if n in scores else "-" for n in names]
        rows.append(f"| {task} | " + " | ".join(cells) + f" | {int(scores.get('rows', 0))} |")
    return "\n".join(rows + [""])


def _usage(info: dict[str, Any]) -> str:
    example = next((t for t in info["tasks"] if t["folder"]), None)
    code = ["```python", "from transformers import AutoModel, AutoTokenizer",
            'encoder = AutoModel.from_pretrained("REPO_OR_FOLDER")          # the shared backbone',
            'tokenizer = AutoTokenizer.from_pretrained("REPO_OR_FOLDER")']
    if example:
        cls = example.get("auto_class") or "AutoModelForSequenceClassification"
        code += [f"from transformers import {cls}",
                 f'model = {cls}.from_pretrained("REPO_OR_FOLDER", subfolder="{example["folder"]}")']
    code += ["", "# the whole multi-task model (backbone + every head), with prefinetune installed:",
             "from prefinetune.export import load_exported", 'model, info = load_exported("FOLDER")', "```"]
    return "\n".join(["## How to load", "",
                      "`heads.safetensors` holds every family's heads; `tasks.json` gives each task's family "
                      "and head index.", ""] + code)
