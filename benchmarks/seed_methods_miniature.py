"""The seed methods in miniature (issue #22): each paper's direction against plain multi-task learning at the
same updates, on this 2-core CPU with all-MiniLM-L6-v2, measured as the held-out study measures (`compare` on
held-out tasks at 10% of their training rows). What this scale shows, not a reproduction.

    python benchmarks/seed_methods_miniature.py --data-dir ../shared/data [--out benchmarks/results/seed_methods.json]

1. Pre-finetune MiniLM on the held-out study's 4 tasks (recipes/heldout_study/prefinetune_4.yaml: sst2, qnli,
   arc_easy, xquad_en) for `--updates` updates of 4 slots x 8 rows, one CPU worker, ZeRO stage 0, once per
   variant: plain MTL (Muppet's fc heads, natural sampling with a 10k cap); CA-MTL (model.conditioning camtl,
   the lower half frozen); attention heads at a fixed d_t = 64 and with DyPa's widths (Wolfe & Lundgaard);
   SVD task weights recomputed every 25 updates (Wu, Zhang & Ré).
2. `compare` each export and plain MiniLM on cb (NLI-style pair, 3 classes) and copa (multiple choice), held
   out of the mixture, at 10% of their training rows, `--seeds` seeds (the study's recipes: 5 epochs; one
   worker per trial). The CA-MTL export is fine-tuned with its conditioning and the export's max_length (its
   conditional attention's blocks are sized by it; copa's recipe has 64), in its own compare, same seeds and rows.
3. Writes the JSON (every model's mean and std per task) and prints the table.

Every step resumes: an export already written is kept, and each compare resumes its trials.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm_tasks import MODEL, REPO, write_result  # noqa: E402

RECIPE = REPO / "recipes" / "heldout_study" / "prefinetune_4.yaml"
CAMTL = ["model.conditioning=camtl"]
VARIANTS = {
    "mtl": [],
    "camtl_half_frozen": CAMTL,
    "attention_d64": ["model.head=attention", "model.head_dim=64"],
    "attention_dypa": ["model.head=attention", "model.head_dim=dypa"],
    "svd_weights": ["sampling.task_weights=svd", "sampling.svd_every=25"],
}
HELDOUT = {"cb": ["finetune.epochs=5"], "copa": ["finetune.epochs=5"]}


def prefinetune(name: str, extra: list[str], data_dir: str, out: Path, updates: int) -> str:
    from prefinetune.recipe.config import load_recipe
    from prefinetune.run.driver import run

    recipe = load_recipe(RECIPE, [f"data.root={data_dir}", f"run.output_dir={out}", f"run.name=seed_{name}",
                                  f"data.shards_dir={out / 'shards'}", f"train.updates={updates}",
                                  "scaling.num_workers=1", "deepspeed.zero_stage=0",
                                  f"checkpoint.every_updates={updates}", f"eval.every_updates={updates}", *extra])
    export = recipe.run_dir / "export"
    if not (export / "tasks.json").is_file():
        run(recipe, source=f"{RECIPE} ({name})")
    return str(export)


def compare_task(task: str, models: list[str], extra: list[str], seeds: int, data_dir: str, out: Path) -> dict:
    from prefinetune.finetune.compare import compare
    from prefinetune.recipe.config import load_recipe

    recipe = load_recipe(REPO / "recipes" / "finetune" / f"{task}.yaml",
                         [f"data.root={data_dir}", f"run.output_dir={out}", *HELDOUT[task], *extra])
    return compare(recipe, models, [0.1], seeds, out)


def camtl_overrides(export: str) -> list[str]:
    """What fine-tuning a CA-MTL export needs: its conditioning and the max_length its blocks were sized by."""
    import json

    info = json.loads((Path(export) / "tasks.json").read_text())
    return [*CAMTL, f"model.max_length={info['model']['max_length']}"]


def cells(summary: dict) -> dict[str, dict]:
    """{model label: {mean, std, seeds}} of a compare summary at its one fraction."""
    return {r["model"]: {"mean": r["test_mean"], "std": r["test_std"], "seeds": r.get("seeds")}
            for r in summary["rows"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "seed_methods.json"))
    p.add_argument("--work-dir", default="runs/seed_methods", help="run folders, exports and compares")
    p.add_argument("--updates", type=int, default=100)
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    work = Path(args.work_dir).expanduser().resolve()
    args.data_dir = str(Path(args.data_dir).expanduser().resolve())     # in the recipes compare resumes by
    exports = {name: prefinetune(name, extra, args.data_dir, work, args.updates) for name, extra in VARIANTS.items()}
    plain = [MODEL] + [exports[n] for n in VARIANTS if n != "camtl_half_frozen"]
    table: dict = {}
    for task in HELDOUT:
        found = cells(compare_task(task, plain, [], args.seeds, args.data_dir, work / f"compare_{task}"))
        camtl = exports["camtl_half_frozen"]
        found.update(cells(compare_task(task, [camtl], camtl_overrides(camtl), args.seeds, args.data_dir,
                                        work / f"compare_{task}_camtl")))
        table[task] = found
    write_result(args.out, {"settings": {"model": MODEL, "recipe": str(RECIPE.relative_to(REPO)),
                                         "updates": args.updates, "slots": 4, "batch_size": 8, "seeds": args.seeds,
                                         "fraction": 0.1, "variants": VARIANTS, "heldout": HELDOUT,
                                         "what": "test metric (accuracy) mean and std over seeds, per held-out "
                                                 "task and model"},
                            "results": table})
    for task, models in table.items():
        for model, cell in models.items():
            print(f"{task:5s} {model:40s} {cell['mean']:.3f} ± {cell['std']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
