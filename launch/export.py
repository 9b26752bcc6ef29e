"""Export a DeepSpeed checkpoint of a run as a Hugging Face folder, and optionally push it to the hub.

    python launch/export.py --recipe recipes/local_cpu.yaml --checkpoint runs/local_cpu/ckpt \
        --out runs/local_cpu/export \
        [--metrics runs/local_cpu/eval_final.json]
    HF_TOKEN=... python launch/export.py --recipe R --checkpoint DIR --out DIR --push-to-hub my-org/my-model

--checkpoint is the folder engine.save_checkpoint wrote (with its 'latest' file) or one tag folder in it.
Trailing `section.key=value` arguments override the recipe, as in the other launch scripts.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefinetune.recipe.config import RecipeError, load_recipe  # noqa: E402


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="DeepSpeed checkpoint -> Hugging Face export folder (-> hub)")
    p.add_argument("--recipe", required=True, help="the run's YAML recipe (model and tasks)")
    p.add_argument("--checkpoint", required=True, help="DeepSpeed checkpoint folder")
    p.add_argument("--tag", help="checkpoint tag (default: the one in the 'latest' file)")
    p.add_argument("--out", required=True, help="export folder to write (an earlier export there is replaced)")
    p.add_argument("--metrics", help="the run's eval_final.json, for the model card's metrics table")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the export to this hub model repo")
    p.add_argument("--public", action="store_true", help="create the hub repo public (default: private)")
    p.add_argument("--revision", help="hub branch to upload to (default: main)")
    p.add_argument("overrides", nargs="*", help="recipe overrides, e.g. model.name_or_path=roberta-base")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        recipe = load_recipe(args.recipe, args.overrides)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from prefinetune.export import export_from_checkpoint, push_to_hub

    metrics = json.loads(Path(args.metrics).read_text()) if args.metrics else None
    out = export_from_checkpoint(args.checkpoint, recipe, args.out, tag=args.tag, metrics=metrics)
    print(f"[prefinetune] export: {out}")
    if args.push_to_hub:
        url = push_to_hub(out, args.push_to_hub, private=not args.public, revision=args.revision)
        print(f"[prefinetune] pushed: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
