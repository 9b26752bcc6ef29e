"""`prefinetune compare --recipes a.yaml b.yaml ...`: several downstream tasks as one Ray Tune experiment,
and one table across them in the shape of Muppet's Table 3 (models down, tasks across, plus the average),
with each model against the base (the first) paired by seed, per task and on the average (versus():
against any other model of the panel, as the ablation pairs its arms with its reference arm).

    panel = compare_panel([rte, copa, stsb], models, [0.1], seeds=10, out_dir="runs/panel")
    # out_dir/<task>/: that task's comparison (results.md/.json/.png, trials/, shards/)
    # out_dir/panel.md, panel.json, panel.png: the table across tasks
    # out_dir/comparison.json: the record of every task's trials (a rerun resumes only the same panel)

The average is Muppet's: the mean over tasks of each task's metric. Its paired statistics are over the
per-seed averages (a seed counts where every task finished it for both models), so the average's interval
is the seeds' spread of the whole panel, not a mix of the tasks' intervals. Run the same command again
after an interruption: finished trials are kept. Ray Tune restores an experiment's trials as first
planned, so a rerun with other tasks, models, seeds or overrides is refused (comparison.json).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from prefinetune.finetune.compare import check_kind, raise_if_unfinished, run_comparisons
from prefinetune.finetune.paired import CONFIDENCE, paired_difference
from prefinetune.finetune.plan import FinetuneError
from prefinetune.finetune.report import delta_cell, metric_label, write_outputs

__all__ = ["compare_panel", "panel_summary", "panel_markdown", "write_panel", "versus", "delta_table",
           "brief_delta_table", "AVERAGE"]

AVERAGE = "average"


def compare_panel(recipes: list, models: list[str], fractions: list[float], seeds: int, out_dir: str | Path,
                  cpus_per_trial: float = 1, gpus_per_trial: float = 0, metric: str | None = None,
                  reuse_from: list[Path] = ()) -> dict:
    """Run (or resume) every recipe's comparison as one experiment; returns the summary panel.json holds.
    Trials finished in `reuse_from` panels (same task recipe, same trial) are copied, not run again."""
    from prefinetune.run.driver import writable_folder

    names = [r.tasks[0].name for r in recipes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise FinetuneError(f"--recipes: task {twice} comes twice; a panel compares each task once")
    if metric is not None:
        raise FinetuneError(f"--metric {metric}: a panel scores each task by its own first metric (accuracy, "
                            "pearson, exact_match, ...); --metric is for one task's comparison (--recipe)")
    out_dir = writable_folder(Path(out_dir).expanduser().resolve(), "--output-dir")
    check_kind(out_dir, "panel")
    summaries = run_comparisons([(r, out_dir / n) for r, n in zip(recipes, names)], models, fractions, seeds,
                                out_dir, cpus_per_trial, gpus_per_trial, metric, reuse_from)
    panel = panel_summary(summaries)
    write_panel(panel, out_dir)
    raise_if_unfinished(summaries, out_dir / "panel.md", out_dir)
    return panel


def panel_summary(summaries: list[dict]) -> dict:
    """The table across tasks as data, from each task's compare summary (prefinetune/finetune/report.py):
    cells[fraction][model][task] = {mean, std, n, vs_base, scores ({seed: test score})}, the task
    "average" included."""
    first = summaries[0]
    tasks, models, base = [s["task"] for s in summaries], list(first["models"]), first["base"]
    per_seed = {(s["task"], r["fraction"], r["model"]): dict(zip(r["seed_ids"], r["test_scores"]))
                for s in summaries for r in s["rows"]}
    cells: dict = {}
    for fraction in first["fractions"]:
        by_model = cells.setdefault(str(fraction), {})
        for s in summaries:
            for r in s["rows"]:
                if r["fraction"] == fraction:
                    by_model.setdefault(r["model"], {})[s["task"]] = {
                        "mean": r["test_mean"], "std": r["test_std"], "n": r["seeds"], "vs_base": r.get("vs_base"),
                        "scores": per_seed[(s["task"], fraction, r["model"])]}
        averages = {m: _seed_average(per_seed, tasks, fraction, m) for m in models}
        for model, seeds in averages.items():
            if seeds:
                values = np.array(list(seeds.values()))
                by_model.setdefault(model, {})[AVERAGE] = {
                    "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "n": len(values), "scores": seeds,
                    "vs_base": paired_difference(seeds, averages[base]) if model != base and averages[base] else None}
    return {"tasks": tasks, "metrics": {s["task"]: s["metric"] for s in summaries}, "models": first["models"],
            "base": base, "fractions": first["fractions"], "seeds": first["seeds"], "cells": cells,
            "complete": all(s.get("complete", True) for s in summaries),
            "trials": {k: sum(s.get("trials", {}).get(k, 0) for s in summaries)
                       for k in ("total", "finished", "failed")}}


def _seed_average(per_seed: dict, tasks: list[str], fraction: float, model: str) -> dict[int, float]:
    """{seed: the mean over tasks of the model's test score}, for the seeds every task finished."""
    scores = [per_seed.get((task, fraction, model), {}) for task in tasks]
    common = sorted(set.intersection(*(set(s) for s in scores))) if scores else []
    return {seed: float(np.mean([s[seed] for s in scores])) for seed in common}


def versus(panel: dict, reference: str) -> dict:
    """Every other model against `reference` (one of the panel's models), paired by seed as against the
    base: {fraction: {model: {task or "average": paired_difference}}}. The ablation's lever effects: each
    arm against the arm it differs from in that lever alone."""
    if reference not in panel["models"]:
        raise FinetuneError(f"the reference {reference} is not one of the panel's models {list(panel['models'])}")
    out: dict = {}
    for fraction, cells in panel["cells"].items():
        mine = cells.get(reference, {})
        out[fraction] = {
            model: {column: paired_difference(cell["scores"], mine[column]["scores"])
                    for column, cell in by_task.items() if column in mine}
            for model, by_task in cells.items() if model != reference}
    return out


def delta_table(panel: dict, deltas: dict, against: str) -> list[str]:
    """Markdown lines: per fraction, each model's paired difference from `against` per task (deltas as
    versus() returns them)."""
    return [line for fraction in panel["fractions"]
            for line in _delta_rows(panel, deltas.get(str(fraction), {}), against, f"{fraction:g}")]


def brief_delta_table(panel: dict, deltas: dict, against: str, alpha: float = 0.05) -> list[str]:
    """delta_table at a glance: per fraction, each model's Δ from `against` as "Δ (p)" per task, bold where
    p < alpha, and how many tasks (the average aside) it gains and loses on significantly: the transfer
    study's goal (gains on four of six, losses on none) read off one row."""
    columns, names = _columns(panel)
    lines = []
    for fraction in panel["fractions"]:
        lines += [f"Δ vs {against} at {fraction:g} of the training rows, paired by seed (p of the paired t-test; "
                  f"bold: p < {alpha:g}):", "", "| model | " + " | ".join(names) + " | gains / losses |",
                  "|" + "---|" * (len(names) + 2)]
        for model, by_task in deltas.get(str(fraction), {}).items():
            tests = [by_task.get(c) for c in columns]
            sig = [t["mean"] for t, c in zip(tests, columns) if c != AVERAGE and _significant(t, alpha)]
            lines.append(f"| {model} | " + " | ".join(_brief_cell(t, alpha) for t in tests)
                         + f" | {sum(d > 0 for d in sig)} / {sum(d < 0 for d in sig)} |")
        lines.append("")
    return lines


def _significant(stats: dict | None, alpha: float) -> bool:
    return stats is not None and stats["p_value"] is not None and stats["p_value"] < alpha


def _brief_cell(stats: dict | None, alpha: float) -> str:
    """+0.115 (0.0055), bold where significant; "-" where nothing was paired."""
    if stats is None or stats["n"] == 0:
        return "-"
    p = "" if stats["p_value"] is None else f" ({stats['p_value']:.2g})"
    return f"**{stats['mean']:+.3f}**{p}" if _significant(stats, alpha) else f"{stats['mean']:+.3f}{p}"


def _delta_rows(panel: dict, deltas: dict, against: str, fraction: str) -> list[str]:
    """One fraction's Δ table: {model: {column: paired_difference or None}} as markdown lines."""
    columns, names = _columns(panel)
    return [f"Δ vs {against} at {fraction} of the training rows (paired by seed: mean difference "
            f"[{CONFIDENCE:.0%} t-interval] p of the paired t-test (wins/ties/losses)):", "",
            "| model | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1),
            *(f"| {model} | " + " | ".join(delta_cell(by_task.get(c)) for c in columns) + " |"
              for model, by_task in deltas.items()), ""]


def panel_markdown(panel: dict) -> str:
    """Per fraction: models down, tasks (and the average) across, mean ± std over seeds; then each model's
    paired difference from the base per task."""
    columns, names = _columns(panel)
    lines = []
    if not panel["complete"]:
        t = panel["trials"]
        lines += [f"PARTIAL: {t['finished']} of {t['total']} trials finished (run the same command again to run "
                  "the rest; each task's results.md lists failed trials)", ""]
    metrics = ", ".join(f"{t} {metric_label(m)}" for t, m in panel["metrics"].items())
    lines += [f"Test scores, mean ± std over {panel['seeds']} seeds (the number where fewer); the grid point "
              f"chosen per seed on each task's select split. {AVERAGE}: the mean over tasks of each task's metric "
              f"({metrics}), per seed, over the seeds every task finished.", ""]
    for fraction in panel["fractions"]:
        cells = panel["cells"].get(str(fraction), {})
        lines += [f"**{fraction:g} of the training rows**", "", "| model | " + " | ".join(names) + " |",
                  "|" + "---|" * (len(names) + 1)]
        for model in panel["models"]:
            mine = cells.get(model, {})
            lines.append(f"| {model} | " + " | ".join(_score_cell(mine.get(c), panel["seeds"]) for c in columns) + " |")
        deltas = {model: {c: (cells.get(model, {}).get(c) or {}).get("vs_base") for c in columns}
                  for model in panel["models"] if model != panel["base"]}
        lines += ["", *_delta_rows(panel, deltas, panel["base"], f"{fraction:g}")]
    return "\n".join(lines)


def _columns(panel: dict) -> tuple[list[str], list[str]]:
    """The table's columns (the tasks, then the average) and their headings (each task with its metric)."""
    return ([*panel["tasks"], AVERAGE],
            [f"{t} ({metric_label(panel['metrics'][t])})" for t in panel["tasks"]] + [AVERAGE])


def _score_cell(cell: dict | None, seeds: int) -> str:
    if cell is None:
        return "-"
    return f"{cell['mean']:.3f} ± {cell['std']:.3f}" + ("" if cell["n"] == seeds else f" ({cell['n']} seeds)")


def plot_panel(panel: dict, path: Path) -> Path:
    """One panel per fraction: each model's paired difference from the base per task and on the average,
    bars with their 95% t-intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [*panel["tasks"], AVERAGE]
    others = [m for m in panel["models"] if m != panel["base"]]
    fig, axes = plt.subplots(1, len(panel["fractions"]), figsize=(1.2 * len(columns) * len(panel["fractions"]) + 3,
                                                                     3.8), squeeze=False)
    width = 0.8 / max(len(others), 1)
    for ax, fraction in zip(axes[0], panel["fractions"]):
        cells = panel["cells"].get(str(fraction), {})
        for i, model in enumerate(others):
            stats = [(cells.get(model, {}).get(c) or {}).get("vs_base") for c in columns]
            x = [j + (i - (len(others) - 1) / 2) * width for j in range(len(columns))]
            means = [d["mean"] if d and d["n"] else np.nan for d in stats]
            low = [d["mean"] - d["ci"][0] if d and d["ci"] else 0.0 for d in stats]
            high = [d["ci"][1] - d["mean"] if d and d["ci"] else 0.0 for d in stats]
            ax.bar(x, means, width, yerr=[low, high], capsize=3, label=model)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
        ax.set_ylabel(f"Δ vs {panel['base']}")
        ax.set_title(f"{fraction:g} of the training rows ({CONFIDENCE:.0%} t-intervals)")
        if others:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_panel(panel: dict, out_dir: Path) -> None:
    write_outputs(panel, out_dir, "panel", panel_markdown(panel), plot_panel, "panel")
