"""A comparison's results: the chosen grid point per model, fraction and seed (best on the select split),
its test score, mean +- std over seeds per model and fraction, and each model against the first (the
base), paired by seed (prefinetune/finetune/paired.py: the mean difference, its 95% interval, the paired
test's p, wins/ties/losses); as JSON, a markdown table and a plot.

    summary = summarise("rte", results, labels, [0.1, 1.0], seeds=3)   # pure
    write_report(summary, out_dir)       # results.json, results.md, results.png (plot: best effort)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from prefinetune.finetune.paired import CONFIDENCE, paired_difference
from prefinetune.finetune.plan import FinetuneError

__all__ = ["default_metric", "metric_label", "choose", "summarise", "markdown_table", "plot", "write_report"]


def _score(result: dict, split_key: str, metric: str) -> float:
    task, split = result["task"], result[split_key]
    try:
        return float(result["metrics"][f"{split}/{task}/{metric}"])
    except KeyError:
        names = sorted({k.split("/")[2] for k in result["metrics"] if k.startswith(f"{split}/{task}/")} - {"rows"})
        raise FinetuneError(f"--metric {metric}: task {task}'s trials report no {split} {metric}; they report "
                            f"{names} (run the same command with one of them: finished trials are kept)") from None


def _finite(value: float) -> bool:
    return bool(np.isfinite(value))


def default_metric(result: dict) -> str:
    """The task's first metric on the select split (accuracy, pearson, exact_match, rouge1, ...)."""
    prefix = f"{result['select_split']}/{result['task']}/"
    names = [k[len(prefix):] for k in result["metrics"] if k.startswith(prefix) and not k.endswith("/rows")]
    if not names:
        raise FinetuneError(f"trial {result['trial']} reported no {result['select_split']} metrics")
    return names[0]


def metric_label(metric: str | None) -> str:
    """A summary's metric as shown: known once a trial of the task has finished."""
    return metric or "metric unknown, no trial finished yet"


def choose(results: list[dict], metric: str) -> dict[tuple, dict]:
    """{(model, fraction, seed): the result whose grid point scored best on the select split}; ties go to
    the point listed first in the grid; a score that is not a number (a constant prediction's correlation)
    ranks below every number."""
    def rank(r):
        score = _score(r, "select_split", metric)
        return score if _finite(score) else -np.inf

    chosen: dict[tuple, dict] = {}
    for r in sorted(results, key=lambda r: r["trial"]["index"]):
        key = (r["trial"]["model"], r["trial"]["fraction"], r["trial"]["seed"])
        if key not in chosen or rank(r) > rank(chosen[key]):
            chosen[key] = r
    return chosen


def _whole_seeds(results: list[dict], points: int | None) -> list[dict]:
    """The results of the (model, fraction, seed) triples whose every grid point finished: a seed chosen
    from fewer points than the others is not comparable with them (None: no such check)."""
    if points is None:
        return results
    count: dict[tuple, int] = {}
    for r in results:
        key = (r["trial"]["model"], r["trial"]["fraction"], r["trial"]["seed"])
        count[key] = count.get(key, 0) + 1
    return [r for r in results
            if count[(r["trial"]["model"], r["trial"]["fraction"], r["trial"]["seed"])] >= points]


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Over the values that are numbers; (None, None) where none is (JSON has no NaN)."""
    arr = np.asarray([v for v in values if _finite(v)], dtype=float)
    if not len(arr):
        return None, None
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def summarise(task: str, results: list[dict], labels: dict[str, str], fractions: list[float], seeds: int,
              metric: str | None = None, points: int | None = None) -> dict:
    """The comparison's table as data: per model and fraction, the test score of each seed's chosen point,
    over the seeds whose every one of the `points` grid points finished, with a test score that is a
    number (the others are listed per row, "incomplete_seeds" and "not_a_number_seeds", and in
    "excluded_seeds", which keeps them where none of a row's seeds is left)."""
    results = [{**r, "task": task} for r in results]
    metric = metric or (default_metric(results[0]) if results else None)     # None: no trial finished yet
    if results:
        _score(results[0], "select_split", metric)        # a metric the trials lack: named, with theirs
    whole = _whole_seeds(results, points)
    chosen, started = choose(whole, metric), {(r["trial"]["model"], r["trial"]["fraction"], r["trial"]["seed"])
                                              for r in results}
    rows, excluded = [], []
    for model in labels:
        for fraction in fractions:
            picks = [chosen[(model, fraction, s)] for s in range(seeds) if (model, fraction, s) in chosen]
            incomplete = [s for s in range(seeds) if (model, fraction, s) in started and (model, fraction, s)
                          not in chosen]
            nan = [r["trial"]["seed"] for r in picks if not _finite(_score(r, "test_split", metric))]
            picks = [r for r in picks if r["trial"]["seed"] not in nan]
            if incomplete or nan:
                excluded.append({"model": model, "fraction": fraction, "incomplete_seeds": incomplete,
                                 "not_a_number_seeds": nan})
            if not picks:
                continue
            test = [_score(r, "test_split", metric) for r in picks]
            select = [_score(r, "select_split", metric) for r in picks]
            (tm, ts), (sm, ss) = _mean_std(test), _mean_std(select)
            rows.append({"model": model, "fraction": fraction, "seeds": len(picks), "test_mean": tm, "test_std": ts,
                         "select_mean": sm, "select_std": ss, "test_scores": test,
                         "seed_ids": [r["trial"]["seed"] for r in picks],
                         "incomplete_seeds": incomplete, "not_a_number_seeds": nan,
                         "chosen": [r["trial"]["point"] for r in picks],
                         "updates": [r["updates"] for r in picks]})
    first = results[0] if results else {"select_split": None, "test_split": None}
    base = next(iter(labels), None)
    return {"task": task, "metric": metric, "select_split": first["select_split"], "test_split": first["test_split"],
            "models": labels, "fractions": fractions, "seeds": seeds, "base": base, "rows": with_paired(rows, base),
            "excluded_seeds": excluded}


def with_paired(rows: list[dict], base: str | None) -> list[dict]:
    """Each row of another model than `base`, with "vs_base": its paired difference from base's row at the
    same fraction (over the seeds both finished)."""
    by_fraction = {r["fraction"]: r for r in rows if r["model"] == base}
    out = []
    for row in rows:
        theirs = by_fraction.get(row["fraction"])
        if row["model"] != base and theirs is not None:
            row = {**row, "vs_base": paired_difference(dict(zip(row["seed_ids"], row["test_scores"])),
                                                       dict(zip(theirs["seed_ids"], theirs["test_scores"])))}
        out.append(row)
    return out


def delta_cell(stats: dict | None) -> str:
    """A paired difference in a table cell: +0.050 [-0.010, +0.110] p=0.09 (W/T/L 7/1/2)."""
    if stats is None or stats["n"] == 0:
        return "-"
    ci = "" if stats["ci"] is None else f" [{stats['ci'][0]:+.3f}, {stats['ci'][1]:+.3f}]"
    p = "" if stats["p_value"] is None else f" p={stats['p_value']:.2g}"
    return f"{stats['mean']:+.3f}{ci}{p} ({stats['wins']}/{stats['ties']}/{stats['losses']})"


def markdown_table(summary: dict) -> str:
    """Models down, fractions across: test mean +- std over seeds (the number of seeds where fewer), and
    per fraction the paired difference from the base model (the first)."""
    fractions = summary["fractions"]
    cells = {(r["model"], r["fraction"]): r for r in summary["rows"]}
    head = "| model | " + " | ".join(f"{f:g} of train | Δ vs base at {f:g}" for f in fractions) + " |"
    lines = [f"{summary['task']}: {summary['test_split']} {metric_label(summary['metric'])}, mean ± std over "
             f"{summary['seeds']} seeds; grid point chosen on {summary['select_split']}. Δ vs base: the mean "
             f"paired difference from {summary.get('base')} over the seeds both finished, its "
             f"{CONFIDENCE:.0%} t-interval, the paired t-test's p, wins/ties/losses over seeds", "", head,
             "|" + "---|" * (2 * len(fractions) + 1)]
    trials = summary.get("trials")
    if trials and not summary.get("complete", True):
        lines[:0] = [f"PARTIAL: {trials['finished']} of {trials['total']} trials finished (run the same command "
                     "again to run the rest)", ""]
    failures = summary.get("failures", [])
    failed = {(x["model"], x["fraction"]) for x in failures}
    for model in summary["models"]:
        row = [model]
        for f in fractions:
            r = cells.get((model, f))
            empty = "failed" if (model, f) in failed else "-"
            row.append(empty if r is None else f"{r['test_mean']:.3f} ± {r['test_std']:.3f}"
                       + ("" if r["seeds"] == summary["seeds"] else f" ({r['seeds']} seeds)"))
            row.append("base" if model == summary.get("base") else delta_cell((r or {}).get("vs_base")))
        lines.append("| " + " | ".join(row) + " |")
    if failures:
        lines += ["", f"Failed trials ({len(failures)}; run the same command again to retry them):"]
        lines += [f"- {x['trial']}: {x['reason']} (its log: {x['log']})" for x in failures]
    return "\n".join(lines) + "\n"


def legend_labels(summary: dict) -> dict[str, str]:
    """{model: its legend entry}: the model, and how many of its trials failed with the first reason."""
    labels = {}
    for model in summary["models"]:
        failed = [x for x in summary.get("failures", []) if x["model"] == model]
        labels[model] = model if not failed else f"{model} ({len(failed)} trials failed: {failed[0]['reason'][:60]})"
    return labels


def plot(summary: dict, path: Path) -> Path:
    """Left: score vs fraction, one line per model, error bars of one std. Right: each model's paired
    difference from the base vs fraction, error bars its 95% t-interval (none below 2 seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, dx) = plt.subplots(1, 2, figsize=(11, 3.8))
    for model, label in legend_labels(summary).items():
        rows = sorted((r for r in summary["rows"] if r["model"] == model), key=lambda r: r["fraction"])
        if rows:
            line = ax.errorbar([r["fraction"] for r in rows], [r["test_mean"] for r in rows],
                               yerr=[r["test_std"] for r in rows], marker="o", capsize=3, label=label)
            _plot_delta(dx, model, rows, line[0].get_color())      # the model's colour in both panels
        elif label != model:       # every trial of it failed: named in the legend, not dropped silently
            ax.plot([], [], linestyle="none", marker="x", label=label)
    ax.set_xlabel("fraction of the training rows")
    ax.set_ylabel(f"{summary['test_split']} {metric_label(summary['metric'])}")
    ax.set_title(f"{summary['task']} ({summary['seeds']} seeds, mean ± std)")
    ax.legend()
    dx.axhline(0.0, color="grey", linewidth=0.8)
    dx.set_xlabel("fraction of the training rows")
    dx.set_ylabel(f"Δ {metric_label(summary['metric'])} vs {summary.get('base')}")
    dx.set_title(f"paired difference from the base ({CONFIDENCE:.0%} t-interval)")
    if dx.get_legend_handles_labels()[0]:
        dx.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_delta(ax, model: str, rows: list[dict], color) -> None:
    paired = [(r["fraction"], r["vs_base"]) for r in rows if r.get("vs_base") and r["vs_base"]["n"]]
    if not paired:
        return
    means = [d["mean"] for _, d in paired]
    low = [d["mean"] - d["ci"][0] if d["ci"] else 0.0 for _, d in paired]
    high = [d["ci"][1] - d["mean"] if d["ci"] else 0.0 for _, d in paired]
    ax.errorbar([f for f, _ in paired], means, yerr=[low, high], marker="o", capsize=3, label=model, color=color)


def write_outputs(data: dict, out_dir: Path, stem: str, table: str, plot_fn, what: str) -> None:
    """STEM.json (the data), STEM.md (the table, also printed) and STEM.png (plot_fn(data, path), best effort:
    a broken plotting library costs the picture, not the results)."""
    from prefinetune.run.best_effort import best_effort

    out_dir = Path(out_dir)
    (out_dir / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (out_dir / f"{stem}.md").write_text(table, encoding="utf-8")
    print(f"[compare] {what} ({out_dir / f'{stem}.md'}):\n{table}", flush=True)
    best_effort(f"the {what} plot", plot_fn, data, out_dir / f"{stem}.png")


def write_report(summary: dict, out_dir: Path) -> None:
    write_outputs(summary, out_dir, "results", markdown_table(summary), plot, "results")
