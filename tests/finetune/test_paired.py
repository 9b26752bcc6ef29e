"""compare's paired statistics (prefinetune/finetune/paired.py, report.py): each model against the base,
paired by seed; checked against scipy and numpy computed directly on the trials' own scores.

    python -m pytest tests/finetune/test_paired.py -q
"""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from scipy import stats

from prefinetune.finetune.paired import paired_difference
from prefinetune.finetune.plan import FinetuneError
from prefinetune.finetune.report import markdown_table, summarise, write_report


def _result(model, fraction, seed, index, dev, test, lr):
    return {"trial": {"model": model, "fraction": fraction, "seed": seed, "index": index, "point": {"optim.lr": lr}},
            "updates": 10, "select_split": "dev", "test_split": "test",
            "metrics": {"dev/cb/accuracy": dev, "test/cb/accuracy": test}}


def test_the_difference_its_t_interval_and_p_are_scipy_s_on_the_paired_scores():
    rng = np.random.default_rng(3)
    base = {s: float(x) for s, x in enumerate(rng.random(5).round(3))}
    cand = {s: base[s] + float(d) for s, d in enumerate(rng.normal(0.05, 0.03, 5).round(3))}
    cand[1] = base[1]                      # a tie
    cand[7] = 0.9                          # a seed the base lacks: not paired
    got = paired_difference(cand, base)
    diff = np.array([cand[s] - base[s] for s in range(5)])
    half = stats.t.ppf(0.975, 4) * diff.std(ddof=1) / np.sqrt(5)        # the interval by hand
    assert got["seeds"] == [0, 1, 2, 3, 4] and got["n"] == 5
    assert got["mean"] == pytest.approx(diff.mean()) and got["std"] == pytest.approx(diff.std(ddof=1))
    assert got["ci"] == pytest.approx([diff.mean() - half, diff.mean() + half])
    assert got["p_value"] == pytest.approx(stats.ttest_rel([cand[s] for s in range(5)],
                                                           [base[s] for s in range(5)]).pvalue)
    assert (got["wins"], got["ties"], got["losses"]) == (int((diff > 0).sum()), 1, int((diff < 0).sum()))
    assert got["bootstrap_ci"] is None                   # fewer than 10 seeds


def test_from_ten_seeds_a_bootstrap_interval_and_the_edge_cases():
    rng = np.random.default_rng(5)
    base = {s: float(x) for s, x in enumerate(rng.random(12))}
    cand = {s: base[s] + float(rng.normal(0.02, 0.05)) for s in base}
    got = paired_difference(cand, base)
    diff = np.array([cand[s] - base[s] for s in range(12)])
    boot = stats.bootstrap((diff,), np.mean, n_resamples=9999, method="percentile", random_state=0)
    assert got["bootstrap_ci"] == pytest.approx([boot.confidence_interval.low, boot.confidence_interval.high])
    assert got["bootstrap_ci"][0] < diff.mean() < got["bootstrap_ci"][1]
    one = paired_difference({0: 0.7}, {0: 0.5})
    assert one["mean"] == pytest.approx(0.2) and one["ci"] is None and one["p_value"] is None and one["wins"] == 1
    same = paired_difference({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6})
    assert same["ci"] == [0.0, 0.0] and same["p_value"] == 1.0 and same["ties"] == 2
    shifted = paired_difference({0: 0.75, 1: 0.5}, {0: 0.5, 1: 0.25})
    assert shifted["ci"] == [0.25, 0.25] and shifted["p_value"] is None and shifted["wins"] == 2   # t undefined
    # k/N scores whose differences are the same but for float rounding: no spread either, not p = 1e-30
    rounded = paired_difference({0: 0.57, 1: 0.62, 2: 0.66}, {0: 0.55, 1: 0.60, 2: 0.64})
    assert rounded["p_value"] is None and rounded["ci"] == pytest.approx([0.02, 0.02]) and rounded["wins"] == 3
    assert paired_difference({}, {0: 0.5})["n"] == 0


def test_a_comparison_reports_each_model_against_the_base_paired_by_seed(tmp_path):
    """summarise on 3 models x 2 fractions x 10 seeds x 2 grid points (one trial of b missing): vs_base of
    each non-base row is scipy's paired test on the test scores of the points best on dev, per seed;
    results.md has the Δ columns, results.json the statistics, results.png both panels."""
    rng = np.random.default_rng(0)
    results, i = [], 0
    for model, shift in (("base", 0.0), ("b", 0.05), ("c", -0.02)):
        for fraction in (0.1, 1.0):
            for seed in range(10):
                for lr in (1e-5, 2e-5):
                    if (model, fraction, seed) == ("b", 0.1, 3):
                        continue
                    dev, test = rng.random(), min(1.0, 0.5 + shift + 0.05 * rng.standard_normal())
                    results.append(_result(model, fraction, seed, i, dev, test, lr))
                    i += 1
    summary = summarise("cb", results, {"base": "B", "b": "X", "c": "Y"}, [0.1, 1.0], 10)

    def scores(model, fraction):      # the trials' own: per seed, the test score of the point best on dev
        out = {}
        for r in results:
            t = r["trial"]
            if (t["model"], t["fraction"]) == (model, fraction):
                best = out.get(t["seed"])
                if best is None or r["metrics"]["dev/cb/accuracy"] > best["metrics"]["dev/cb/accuracy"]:
                    out[t["seed"]] = r
        return {s: r["metrics"]["test/cb/accuracy"] for s, r in out.items()}

    assert summary["base"] == "base"
    for row in summary["rows"]:
        if row["model"] == "base":
            assert "vs_base" not in row
            continue
        mine, base = scores(row["model"], row["fraction"]), scores("base", row["fraction"])
        seeds = sorted(set(mine) & set(base))
        assert row["vs_base"]["seeds"] == seeds and len(seeds) == (9 if (row["model"], row["fraction"]) ==
                                                                    ("b", 0.1) else 10)
        test = stats.ttest_rel([mine[s] for s in seeds], [base[s] for s in seeds])
        assert row["vs_base"]["p_value"] == pytest.approx(test.pvalue)
        ci = test.confidence_interval()
        assert row["vs_base"]["ci"] == pytest.approx([ci.low, ci.high])
        assert row["vs_base"]["mean"] == pytest.approx(np.mean([mine[s] - base[s] for s in seeds]))
    table = markdown_table(summary)
    b01 = next(r for r in summary["rows"] if (r["model"], r["fraction"]) == ("b", 0.1))
    d = b01["vs_base"]
    assert "| model | 0.1 of train | Δ vs base at 0.1 | 1 of train | Δ vs base at 1 |" in table
    assert (f"| b | {b01['test_mean']:.3f} ± {b01['test_std']:.3f} (9 seeds) | {d['mean']:+.3f} [{d['ci'][0]:+.3f}, "
            f"{d['ci'][1]:+.3f}] p={d['p_value']:.2g} ({d['wins']}/{d['ties']}/{d['losses']}) |") in table
    assert "| base | " in table and " | base |" in table
    write_report(summary, tmp_path)
    png = (tmp_path / "results.png").read_bytes()
    width, height = struct.unpack(">II", png[16:24])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and width > 2 * height        # the two panels side by side


def test_a_panel_is_one_table_across_tasks_with_the_average_paired_by_seed(tmp_path):
    """panel_summary over two tasks' summaries (a seed of one task missing for b): each task's cell is its
    own summary's; the average is the mean over tasks per seed, over the seeds both tasks finished, and
    its Δ is scipy's paired test on those per-seed averages; panel.md/.json/.png are written."""
    from prefinetune.finetune.panel import AVERAGE, panel_markdown, panel_summary, write_panel

    rng = np.random.default_rng(1)
    summaries, scores = [], {}
    for task in ("cb", "copa"):
        results = []
        for i, (model, seed) in enumerate((m, s) for m in ("base", "b") for s in range(5)):
            if (task, model, seed) == ("copa", "b", 2):
                continue
            test = float(rng.random())
            scores[(task, model, seed)] = test
            r = _result(model, 0.1, seed, i, 0.5, test, 1e-5)
            r["metrics"] = {f"dev/{task}/accuracy": 0.5, f"test/{task}/accuracy": test}
            results.append(r)
        summaries.append(summarise(task, results, {"base": "B", "b": "X"}, [0.1], 5))
    panel = panel_summary(summaries)
    cells = panel["cells"]["0.1"]
    for task, summary in zip(("cb", "copa"), summaries):
        row = next(r for r in summary["rows"] if r["model"] == "b")
        assert cells["b"][task]["mean"] == row["test_mean"] and cells["b"][task]["vs_base"] == row["vs_base"]

    def average(model):
        return {s: (scores[("cb", model, s)] + scores[("copa", model, s)]) / 2 for s in (0, 1, 3, 4)}

    mine, base = average("b"), average("base")
    assert cells["b"][AVERAGE]["n"] == 4 and cells["b"][AVERAGE]["mean"] == pytest.approx(np.mean(list(mine.values())))
    assert cells["base"][AVERAGE]["n"] == 5
    test = stats.ttest_rel([mine[s] for s in mine], [base[s] for s in mine])
    assert cells["b"][AVERAGE]["vs_base"]["p_value"] == pytest.approx(test.pvalue)
    assert cells["b"][AVERAGE]["vs_base"]["seeds"] == [0, 1, 3, 4]
    table = panel_markdown(panel)
    assert "| model | cb (accuracy) | copa (accuracy) | average |" in table
    assert f"| b | {cells['b']['cb']['mean']:.3f} ± {cells['b']['cb']['std']:.3f} | " in table
    assert f" | {cells['b'][AVERAGE]['mean']:.3f} ± {cells['b'][AVERAGE]['std']:.3f} (4 seeds) |" in table
    write_panel(panel, tmp_path)
    assert json.loads((tmp_path / "panel.json").read_text())["tasks"] == ["cb", "copa"]
    assert (tmp_path / "panel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_model_against_a_reference_of_the_panel_is_scipy_s_paired_test_on_the_trials_scores():
    """versus(panel, "u500"): every other model (the base too) against the reference, per task and on the
    average, is scipy's paired t-test over the seeds both finished, on the trials' own test scores; the
    ablation's Δ table shows it; a reference that is not a model of the panel is refused by name."""
    from prefinetune.finetune.panel import AVERAGE, delta_table, panel_summary, versus

    rng = np.random.default_rng(7)
    summaries, scores = [], {}
    for task in ("cb", "copa"):
        results = []
        for i, (model, seed) in enumerate((m, s) for m in ("base", "u500", "r3f") for s in range(4)):
            if (task, model, seed) == ("cb", "r3f", 3):
                continue
            scores[(task, model, seed)] = test = float(rng.random())
            r = _result(model, 0.1, seed, i, 0.5, test, 1e-5)
            r["metrics"] = {f"dev/{task}/accuracy": 0.5, f"test/{task}/accuracy": test}
            results.append(r)
        summaries.append(summarise(task, results, {"base": "B", "u500": "U", "r3f": "R"}, [0.1], 4))
    panel = panel_summary(summaries)
    deltas = versus(panel, "u500")["0.1"]
    assert sorted(deltas) == ["base", "r3f"]
    for model, seeds in (("r3f", [0, 1, 2]), ("base", [0, 1, 2, 3])):
        test = stats.ttest_rel([scores[("cb", model, s)] for s in seeds], [scores[("cb", "u500", s)] for s in seeds])
        assert deltas[model]["cb"]["p_value"] == pytest.approx(test.pvalue) and deltas[model]["cb"]["seeds"] == seeds
    mean = np.mean([np.mean([scores[(t, "r3f", s)] - scores[(t, "u500", s)] for t in ("cb", "copa")])
                    for s in (0, 1, 2)])
    assert deltas["r3f"][AVERAGE]["mean"] == pytest.approx(mean) and deltas["r3f"][AVERAGE]["n"] == 3
    table = "\n".join(delta_table(panel, versus(panel, "u500"), "u500"))
    assert "Δ vs u500 at 0.1 of the training rows" in table
    assert f"| r3f | {deltas['r3f']['cb']['mean']:+.3f} [" in table
    with pytest.raises(FinetuneError, match=r"the reference u1000 is not one of the panel's models "
                                            r"\['base', 'u500', 'r3f'\]"):
        versus(panel, "u1000")


def test_a_seed_counts_only_with_every_grid_point_finished_and_a_score_that_is_a_number():
    """With 2 grid points: a seed of which one point finished is left out (listed as incomplete), so it is
    not paired; a test score that is not a number (a constant prediction's correlation) is left out and
    listed; a select score that is not a number never wins the choice; results.json stays valid JSON."""
    nan = float("nan")
    results = [_result("base", 1.0, s, i, 0.5, 0.6 + 0.01 * s, lr) for i, (s, lr) in
               enumerate((s, lr) for s in range(4) for lr in (1e-5, 2e-5))]
    results += [_result("b", 1.0, 0, 10, 0.5, 0.7, 1e-5), _result("b", 1.0, 0, 11, 0.4, 0.1, 2e-5),
                _result("b", 1.0, 1, 12, nan, 0.2, 1e-5), _result("b", 1.0, 1, 13, 0.3, 0.75, 2e-5),
                _result("b", 1.0, 2, 14, 0.5, 0.9, 1e-5),                      # seed 2: one point of two
                _result("b", 1.0, 3, 15, 0.5, nan, 1e-5), _result("b", 1.0, 3, 16, 0.4, 0.2, 2e-5)]
    summary = summarise("cb", results, {"base": "B", "b": "X"}, [1.0], 4, points=2)
    b = next(r for r in summary["rows"] if r["model"] == "b")
    assert b["seed_ids"] == [0, 1] and b["test_scores"] == [0.7, 0.75]      # seed 1: the finite dev score won
    assert b["incomplete_seeds"] == [2] and b["not_a_number_seeds"] == [3]
    assert summary["excluded_seeds"] == [{"model": "b", "fraction": 1.0, "incomplete_seeds": [2],
                                          "not_a_number_seeds": [3]}]
    assert b["vs_base"]["seeds"] == [0, 1]
    assert b["vs_base"]["mean"] == pytest.approx(((0.7 - 0.6) + (0.75 - 0.61)) / 2)
    json.loads(json.dumps(summary, allow_nan=False))
    assert "(2 seeds)" in markdown_table(summary)


def test_a_metric_the_trials_do_not_report_is_named_with_those_they_do():
    from prefinetune.finetune.plan import FinetuneError

    with pytest.raises(FinetuneError, match=r"--metric f1: task cb's trials report no dev f1; they report "
                                            r"\['accuracy'\] \(run the same command with one of them"):
        summarise("cb", [_result("a", 1.0, 0, 0, 0.5, 0.6, 1e-5)], {"a": "A"}, [1.0], 1, metric="f1")


def test_each_part_of_a_panel_gets_its_own_failed_trials(tmp_path):
    """part_summary matches the experiment's errors to a part by trial folder: a failure of task 2 is task
    2's, and an interrupted trial (Ctrl-C) counts as neither finished nor failed."""
    from types import SimpleNamespace

    from prefinetune.finetune.compare import part_summary, raise_if_unfinished
    from prefinetune.finetune.grid import trial_grid

    def configs(task):
        trials = trial_grid({"a": "A", "b": "B"}, [1.0], 1, {"optim.lr": [1e-5]})
        return [{"trial": t, "recipe": {"run": {"output_dir": str(tmp_path / task / "trials"),
                                                "name": f"{t['model']}"}}} for t in trials]

    one, two = configs("cb"), configs("copa")
    saved_one = [{**_result("a", 1.0, 0, 0, 0.5, 0.6, 1e-5), "trial": one[0]["trial"]},
                 {**_result("b", 1.0, 0, 1, 0.5, 0.7, 1e-5), "trial": one[1]["trial"]}]
    errors = [(two[1], RuntimeError("boom\nValueError: bad rows")), (two[0], KeyboardInterrupt())]
    summaries = []
    for task, cfg, saved in (("cb", one, saved_one), ("copa", two, [None, None])):
        recipe = SimpleNamespace(tasks=[SimpleNamespace(name=task)])
        (tmp_path / task).mkdir()
        summaries.append(part_summary(recipe, tmp_path / task, {"a": "A", "b": "B"}, cfg, saved, errors, [1.0], 1,
                                      "accuracy"))
    assert summaries[0]["failures"] == [] and summaries[0]["complete"] is True
    assert [f["reason"] for f in summaries[1]["failures"]] == ["ValueError: bad rows"]
    assert summaries[1]["trials"] == {"total": 2, "finished": 0, "failed": 1}
    assert "| b | failed |" in (tmp_path / "copa" / "results.md").read_text()
    from prefinetune.finetune.compare import CompareInterrupted

    with pytest.raises(CompareInterrupted, match="2 of 4 trials finished"):     # one stopped: not failed
        raise_if_unfinished(summaries, tmp_path / "panel.md", tmp_path)


def test_a_task_none_of_whose_trials_finished_is_not_labelled_with_a_guessed_metric():
    """A partial panel: stsb scored by pearson, ud_en_ewt with no trial finished yet (it was "accuracy")."""
    from prefinetune.finetune.panel import panel_markdown, panel_summary
    from prefinetune.finetune.report import summarise

    labels = {"base": "BASE", "b": "B"}
    results = []
    for i, model in enumerate(labels):
        r = _result(model, 1.0, 0, i, 0.5, 0.6, 1e-5)
        r["metrics"] = {"dev/stsb/pearson": 0.5 + i / 10, "test/stsb/pearson": 0.6 + i / 10}
        results.append(r)
    panel = panel_summary([summarise("stsb", results, labels, [1.0], 1), summarise("ud_en_ewt", [], labels, [1.0], 1)])
    assert panel["metrics"] == {"stsb": "pearson", "ud_en_ewt": None}
    assert "| model | stsb (pearson) | ud_en_ewt (metric unknown, no trial finished yet) | average |" in \
        panel_markdown(panel)
