"""Write recipes/muppet_*.yaml from prefinetune/catalog/muppet.py, so recipes and catalog never drift.

    python data_prep/write_muppet_recipes.py            # (re)write the three recipes
    python data_prep/write_muppet_recipes.py --check    # exit 1 if a recipe differs from what it would write

The recipes are plain data (task lists inline, TaskConfig fields left at their defaults omitted);
tests/test_muppet_catalog.py checks that each file is byte-for-byte what `render_recipe` gives. To change a
recipe, change RECIPES below or the catalog, and run this script.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from prefinetune.catalog.muppet import UNSUPPORTED, muppet_names, muppet_task  # noqa: E402
from prefinetune.recipe.config import TaskConfig, recipe_from_dict  # noqa: E402

__all__ = ["RECIPES", "ENCODER_FAMILIES", "ALL_FAMILIES", "recipe_path", "build_recipe", "render_recipe", "main"]

ENCODER_FAMILIES = ("classification", "multiple_choice", "span")  # encoder-only backbones: no summarization
ALL_FAMILIES = ENCODER_FAMILIES + ("summarization",)

# Shared by the three recipes. Sources: [paper] = Muppet (Aghajanyan et al. 2021) as summarised in
# ARCHITECTURE.md and in restatements of its sections 3.2-3.5 (the paper's own appendix could not be read
# from here); [roberta] = RoBERTa's fine-tuning Adam settings (Liu et al. 2019), also fairseq's;
# [r3f] = the R3F paper's defaults (Aghajanyan et al. 2020), this project's r3f section defaults;
# [ours] = chosen here.
_COMMON: dict[str, Any] = {
    "sampling": {"policy": "natural"},                                        # [ours] schema default
    "optim": {"weight_decay": 0.01, "betas": [0.9, 0.98], "eps": 1.0e-6,      # [roberta]
              "grad_clip": 1.0},                                              # [ours]
    "deepspeed": {"zero_stage": 2, "precision": "bf16"},                      # [paper] fp16 -> bf16 [ours]
    "r3f": {"enabled": True, "weight": 1.0, "sigma": 1.0e-5, "noise": "normal"},  # [paper] R3F; values [r3f]
    "scaling": {"num_workers": 64, "use_gpu": True, "cpus_per_worker": 4, "max_failures": 3},
    "checkpoint": {"every_updates": 1000, "keep": 3},
    "eval": {"every_updates": 1000, "split": "dev", "max_rows": 2000, "batch_size": 32},
}

# Per recipe. lr / batch / updates / warmup are [ours]: the Muppet paper's own table of pre-finetuning
# hyperparameters could not be read from here, so none of these numbers is claimed to be the paper's.
RECIPES: dict[str, dict[str, Any]] = {
    "muppet_roberta_base": {
        "model": "FacebookAI/roberta-base", "families": ENCODER_FAMILIES, "max_length": 512,
        "batch_size": 16, "updates": 10000, "warmup_updates": 600, "lr": 1.0e-5,
        "about": "RoBERTa-base",
    },
    "muppet_roberta_large": {
        "model": "FacebookAI/roberta-large", "families": ENCODER_FAMILIES, "max_length": 512,
        "batch_size": 8, "updates": 20000, "warmup_updates": 1200, "lr": 1.0e-5,
        "about": "RoBERTa-large",
    },
    "muppet_bart_large": {
        "model": "facebook/bart-large", "families": ALL_FAMILIES, "max_length": 1024,
        "batch_size": 8, "updates": 24000, "warmup_updates": 1440, "lr": 1.0e-5,
        "about": "BART-large",
    },
}

_KEY_ORDER = ("name", "family", "format", "hub", "splits", "columns", "label_names", "label_map",
              "num_choices", "metrics", "doc_stride", "max_target_length")
_ALWAYS = {"name", "family", "format"}


def recipe_path(name: str) -> Path:
    return REPO / "recipes" / f"{name}.yaml"


def _compact_task(name: str) -> dict[str, Any]:
    """The catalog task without the fields left at their TaskConfig defaults, keys in a readable order."""
    full = muppet_task(name)
    defaults = {key: field.get_default(call_default_factory=True) for key, field in TaskConfig.model_fields.items()
                if not field.is_required()}
    kept = {k: v for k, v in full.items() if k in _ALWAYS or (v is not None and v != defaults.get(k, object()))}
    if kept.get("hub"):
        kept["hub"] = {k: v for k, v in kept["hub"].items() if v is not None}
    kept["columns"] = {k: v for k, v in kept["columns"].items() if v is not None}
    return {k: kept[k] for k in sorted(kept, key=lambda k: (_KEY_ORDER + (k,)).index(k))}


def build_recipe(name: str) -> dict[str, Any]:
    """The recipe `name` as a plain dict (validated)."""
    spec = RECIPES[name]
    recipe = {
        "run": {"name": name, "output_dir": "runs", "seed": 0},
        "model": {"name_or_path": spec["model"], "max_length": spec["max_length"], "head_dropout": 0.1},
        "data": {"num_proc": 8, "on_bad_row": "quarantine"},
        "tasks": [_compact_task(task) for task in muppet_names(spec["families"])],
        "sampling": dict(_COMMON["sampling"]),
        "train": {"updates": spec["updates"], "slots_per_update": 64, "batch_size": spec["batch_size"],
                  "log_every": 50},
        "optim": {"lr": spec["lr"], **_COMMON["optim"], "warmup_updates": spec["warmup_updates"]},
        **{key: dict(_COMMON[key]) for key in ("deepspeed", "r3f", "scaling", "checkpoint", "eval")},
    }
    recipe_from_dict(recipe, f"<{name}>")  # fail here, not at launch
    return recipe


def _header(name: str, recipe: dict[str, Any]) -> list[str]:
    spec = RECIPES[name]
    encoder_only = "summarization" not in spec["families"]
    rows = recipe["train"]["slots_per_update"] * recipe["train"]["batch_size"]
    unsupported = ", ".join(UNSUPPORTED)
    lines = [
        f"ray job submit --working-dir . -- python launch/muppet_64gpu.py --recipe recipes/{name}.yaml "
        "--output-dir /shared/runs",
        "",
        f"Muppet pre-finetuning (Aghajanyan et al. 2021) of {spec['about']} ({spec['model']}) on "
        f"{len(recipe['tasks'])} hub datasets, 64 GPU workers.",
        "GENERATED by data_prep/write_muppet_recipes.py from prefinetune/catalog/muppet.py: edit those and",
        "re-run the script; tests/test_muppet_catalog.py fails when this file differs from what it writes.",
        "",
    ]
    if encoder_only:
        lines += [
            "Summarization datasets (CNN/DailyMail, BillSum, XSum, AESLC, Multi-News) are EXCLUDED: RoBERTa is",
            "encoder-only, and a summarization task on an encoder-only backbone is an error before workers start.",
            "They are in recipes/muppet_bart_large.yaml.",
        ]
    else:
        lines += ["All catalogued families, summarization included (BART's own decoder and LM head)."]
    lines += [
        f"Not in any recipe yet (UNSUPPORTED in the catalog, each with its reason): {unsupported}.",
        "",
        "data.on_bad_row: quarantine, because some conversions turn rows into bad rows, counted and set aside",
        "under the shards folder (<task>/<split>/quarantine.jsonl), never dropped silently: SNLI rows without a",
        "gold label; ReCoRD rows whose answer is not among the entities; SciQ rows with an ambiguous answer;",
        "rows with a choice count other than num_choices.",
        "Memory: ReCoRD is multiple choice over its ~14 candidate entities per row (long tail), so its slots",
        "hold the most sequences; if a worker runs out of memory, lower train.batch_size or drop the task.",
        "",
        "Hyperparameters. From the paper: 64 heterogeneous slots per update, each a homogeneous micro-batch",
        "of one task (train.slots_per_update), losses scaled by 1/log(n) (the trainer, no recipe key), no up-",
        "or down-sampling of datasets (natural sampling), R3F/R4F regularisation (r3f; R4F is",
        "r3f.spectral_norm: true); the paper trained in fp16, here bf16 (deepspeed.precision). The paper's",
        "R3F settings were not found: sigma 1e-5, lambda 1, normal noise are this project's defaults,",
        "from the R3F paper (Aghajanyan et al. 2020). In bf16 most of noise this small is rounded away",
        "(README, R3F; the run warns at start): raise r3f.sigma or train in fp32 to keep it. R3F",
        "roughly doubles the cost of a slot (README, Benchmarks); r3f.enabled=false turns it off. From",
        "RoBERTa's fine-tuning setup: Adam betas (0.9, 0.98), eps 1e-6, weight decay 0.01. Ours (the paper",
        "trained each model 'until convergence', a day to 4 days on 64 GPUs; its table of pre-finetuning",
        "values, if any, could not be read while writing this; tune before quoting):",
        f"lr {spec['lr']:g}, train.batch_size {recipe['train']['batch_size']} ({rows} rows per update),",
        f"updates {spec['updates']} (about 3 passes over the natural mixture), warmup "
        f"{spec['warmup_updates']} (6%), grad_clip 1.0, model.max_length {spec['max_length']},",
        "and the checkpoint / eval / scaling cadence.",
        "",
        "Offline (no hub on the cluster): on a machine with hub access, copy each task's dataset into",
        "<data-dir>/<task name>/ (task names as below), keeping the hub's files, configs and split names, e.g.",
        "  hf download <hub.path> --repo-type dataset [--revision <hub.revision>] --local-dir <data-dir>/<task>",
        "(add --include '<hub.name>/*' README.md to fetch one config of a multi-config repo such as",
        "nyu-mll/glue), then add --data-dir <data-dir> to the command above: each hub task is then read",
        "from <data-dir>/<task name> with the same config and split names.",
    ]
    return [f"# {line}".rstrip() for line in lines]


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=float("inf"), sort_keys=False).strip()


def render_recipe(name: str) -> str:
    """The YAML text of recipe `name`: header comments, one line per section, one line per task."""
    recipe = build_recipe(name)
    out = _header(name, recipe)
    for key, value in recipe.items():
        if key == "tasks":
            out.append("tasks:")
            out += [f"  - {_flow(task)}" for task in value]
        else:
            out.append(f"{key}: {_flow(value)}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    args = parser.parse_args(argv)
    stale = []
    for name in RECIPES:
        path, text = recipe_path(name), render_recipe(name)
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO)} ({text.count(chr(10))} lines)")
    for path in stale:
        print(f"{path.relative_to(REPO)} differs from what data_prep/write_muppet_recipes.py writes", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
