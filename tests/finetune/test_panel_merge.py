"""Pairing models from different panels (prefinetune/finetune/panel_merge.py, benchmarks/pair_panels.py):
merged panels pair by seed with scipy's paired t-test on the raw scores, and panels that do not reproduce
each other's trials are refused by name.

    python -m pytest tests/finetune/test_panel_merge.py -q
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from prefinetune.finetune.panel import versus
from prefinetune.finetune.panel_merge import merge_panels, read_panel
from prefinetune.finetune.plan import FinetuneError

TASKS = ("cb", "copa")
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pair_panels.py"


def pair_panels(argv: list[str]) -> int:
    """benchmarks/pair_panels.py's main, loaded from its file (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("pair_panels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def _panel(scores: dict[str, dict[str, list[float]]]) -> dict:
    """A panel.json's shape: {model: {task: per-seed scores}}, its "average" the per-seed task mean."""
    cells = {}
    for model, by_task in scores.items():
        average = np.mean([by_task[t] for t in TASKS], axis=0)
        cells[model] = {task: {"mean": float(np.mean(v)), "scores": {str(s): x for s, x in enumerate(v)}}
                        for task, v in {**by_task, "average": list(average)}.items()}
    return {"tasks": list(TASKS), "metrics": {t: "accuracy" for t in TASKS}, "base": "plain",
            "fractions": [0.1], "seeds": 4, "models": {m: f"/exports/{m}" for m in scores},
            "cells": {"0.1": cells}, "complete": True}


PLAIN = {"cb": [0.50, 0.40, 0.62, 0.55], "copa": [0.52, 0.60, 0.48, 0.57]}
SHIPPED = {"cb": [0.58, 0.44, 0.60, 0.63], "copa": [0.66, 0.64, 0.61, 0.62]}
VARIANT = {"cb": [0.52, 0.48, 0.66, 0.59], "copa": [0.60, 0.58, 0.59, 0.70]}


def _write(tmp_path, name, panel):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(panel))
    return str(path)


def test_a_model_of_one_panel_pairs_with_a_model_of_another_as_scipy_pairs_their_scores(tmp_path):
    a = read_panel(_write(tmp_path, "a", _panel({"plain": PLAIN, "shipped": SHIPPED})))
    b = read_panel(_write(tmp_path, "b", _panel({"plain": PLAIN, "variant": VARIANT})))
    merged = merge_panels([a, b], ["a", "b"])
    assert merged["cells"]["0.1"]["plain"]["cb"]["scores"][2] == 0.62     # seeds are ints again
    assert list(merged["models"]) == ["plain", "shipped", "variant"]
    got = versus(merged, "shipped")["0.1"]["variant"]
    for task in TASKS:
        diff = np.subtract(VARIANT[task], SHIPPED[task])
        half = stats.t.ppf(0.975, 3) * diff.std(ddof=1) / 2
        assert got[task]["ci"] == pytest.approx([diff.mean() - half, diff.mean() + half])
        assert got[task]["p_value"] == pytest.approx(stats.ttest_rel(VARIANT[task], SHIPPED[task]).pvalue)
        assert (got[task]["wins"], got[task]["losses"]) == ((diff > 0).sum(), (diff < 0).sum())
    mean = [np.mean([VARIANT[t][s] for t in TASKS]) for s in range(4)]
    shipped = [np.mean([SHIPPED[t][s] for t in TASKS]) for s in range(4)]
    assert got["average"]["p_value"] == pytest.approx(stats.ttest_rel(mean, shipped).pvalue)


def test_panels_whose_shared_model_scored_differently_do_not_pair(tmp_path):
    other = {**PLAIN, "copa": [0.52, 0.60, 0.49, 0.57]}
    a, b = _panel({"plain": PLAIN, "shipped": SHIPPED}), _panel({"plain": other, "variant": VARIANT})
    with pytest.raises(FinetuneError, match=r"b: plain at fraction 0.1, copa seed 2: 0.49 here, 0.48"):
        merge_panels([read_panel(_write(tmp_path, "a", a)), read_panel(_write(tmp_path, "b", b))], ["a", "b"])


def test_a_tolerance_pairs_panels_apart_by_float_rounding_alone_keeping_the_first_panels_scores(tmp_path):
    rounded = {task: [x + 4e-7 * (seed % 2) for seed, x in enumerate(v)] for task, v in PLAIN.items()}
    a, b = _panel({"plain": PLAIN, "shipped": SHIPPED}), _panel({"plain": rounded, "variant": VARIANT})
    with pytest.raises(FinetuneError, match=r"b: plain at fraction 0.1, cb seed 1: 0.4000004\d* here, 0.4 in a "
                                            r"panel before it \(more than the tolerance 0 apart\)"):
        merge_panels([a, b], ["a", "b"])
    merged = merge_panels([a, b], ["a", "b"], tolerance=1e-6)
    assert merged["largest_difference"] == pytest.approx(4e-7, rel=1e-3)     # the average's gap is 4e-7 too
    assert merged["cells"]["0.1"]["plain"]["cb"]["scores"][1] == 0.40
    got = versus(merged, "plain")["0.1"]["variant"]["cb"]
    assert got["p_value"] == pytest.approx(stats.ttest_rel(VARIANT["cb"], PLAIN["cb"]).pvalue)
    assert merge_panels([a, a], ["a", "a"], tolerance=1e-6)["largest_difference"] == 0.0
    far = _panel({"plain": {**PLAIN, "copa": [0.52, 0.60, 0.481, 0.57]}, "variant": VARIANT})
    with pytest.raises(FinetuneError, match=r"copa seed 2: 0.481 here, 0.48 .*more than the tolerance 1e-06"):
        merge_panels([a, far], ["a", "b"], tolerance=1e-6)
    with pytest.raises(FinetuneError, match=r"the tolerance must be a number of 0 or more, not -1"):
        merge_panels([a, b], ["a", "b"], tolerance=-1)


def test_a_shared_model_missing_a_seed_or_a_task_in_one_panel_is_refused():
    short = _panel({"plain": PLAIN, "variant": VARIANT})
    del short["cells"]["0.1"]["plain"]["copa"]["scores"]["3"]
    with pytest.raises(FinetuneError, match=r"b: plain at fraction 0.1, copa: seeds \[0, 1, 2\] here, "
                                            r"\[0, 1, 2, 3\] in a panel before it"):
        merge_panels([_panel({"plain": PLAIN, "shipped": SHIPPED}), short], ["a", "b"])
    del short["cells"]["0.1"]["plain"]["copa"]
    with pytest.raises(FinetuneError, match=r"b: plain at fraction 0.1: tasks \['average', 'cb'\] here"):
        merge_panels([_panel({"plain": PLAIN, "shipped": SHIPPED}), short], ["a", "b"])


def test_three_panels_merge_unread_ones_too_leaving_their_inputs_and_completeness_as_they_were():
    a, b = _panel({"plain": PLAIN, "shipped": SHIPPED}), _panel({"plain": PLAIN, "variant": VARIANT})
    c = {**_panel({"plain": PLAIN, "third": SHIPPED}), "complete": False}
    merged = merge_panels([a, b, c], ["a", "b", "c"])          # seeds as JSON strings: made ints
    assert list(merged["models"]) == ["plain", "shipped", "variant", "third"] and merged["complete"] is False
    merged["cells"]["0.1"]["plain"]["cb"]["scores"][0] = 9.0
    assert a["cells"]["0.1"]["plain"]["cb"]["scores"] == {"0": 0.50, "1": 0.40, "2": 0.62, "3": 0.55}
    assert versus(merged, "shipped")["0.1"]["third"]["cb"]["mean"] == 0.0


def test_panels_of_other_seeds_or_one_name_for_two_models_are_refused_by_file_and_key(tmp_path):
    a, b = _panel({"plain": PLAIN, "shipped": SHIPPED}), _panel({"plain": PLAIN, "variant": VARIANT})
    with pytest.raises(FinetuneError, match=r"b.json: its seeds \(5\) differ from .*a.json's \(4\)"):
        merge_panels([a, {**b, "seeds": 5}], [str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    moved = {**b, "models": {"plain": "/elsewhere/plain", "variant": "/exports/variant"}}
    with pytest.raises(FinetuneError, match="b: the model plain is /elsewhere/plain, in a panel before it "
                                            "/exports/plain"):
        merge_panels([a, moved], ["a", "b"])


def test_the_command_prints_the_table_and_writes_the_differences(tmp_path, capsys):
    a = _write(tmp_path, "a", _panel({"plain": PLAIN, "shipped": SHIPPED}))
    b = _write(tmp_path, "b", _panel({"plain": PLAIN, "variant": VARIANT}))
    out = tmp_path / "pairs.json"
    assert pair_panels([a, b, "--reference", "shipped", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "Δ vs shipped at 0.1" in table and "| variant |" in table and "| plain |" in table
    written = json.loads(out.read_text())
    assert written["reference"] == "shipped" and written["panels"] == [a, b]
    cb = written["vs_reference"]["0.1"]["variant"]["cb"]
    assert cb["p_value"] == pytest.approx(stats.ttest_rel(VARIANT["cb"], SHIPPED["cb"]).pvalue)
    assert written["complete"] is True and "PARTIAL" not in table
    assert pair_panels([a, b, "--reference", "nobody"]) == 2
    assert "the reference nobody is not one of the panel's models" in capsys.readouterr().err
    c = _write(tmp_path, "c", {"tasks": []})
    assert pair_panels([a, c, "--reference", "shipped"]) == 2
    assert f"{c}: not a panel.json as compare writes it (no metrics, base, fractions, seeds, models, cells)" \
        in capsys.readouterr().err


def test_the_command_pairs_within_a_tolerance_and_says_how_far_apart_the_scores_were(tmp_path, capsys):
    rounded = {task: [x + 7e-7 for x in v] for task, v in PLAIN.items()}
    a = _write(tmp_path, "a", _panel({"plain": PLAIN, "shipped": SHIPPED}))
    b = _write(tmp_path, "b", _panel({"plain": rounded, "variant": VARIANT}))
    assert pair_panels([a, b, "--reference", "shipped"]) == 2
    assert "more than the tolerance 0 apart" in capsys.readouterr().err
    out = tmp_path / "pairs.json"
    assert pair_panels([a, b, "--reference", "shipped", "--tolerance", "1e-6", "--out", str(out)]) == 0
    assert "differ by up to 7e-07 between the panels (--tolerance 1e-06)" in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["tolerance"] == 1e-6 and written["largest_difference"] == pytest.approx(7e-7, rel=1e-3)


def test_the_brief_table_gives_each_difference_its_p_bolds_the_significant_and_counts_them(tmp_path, capsys):
    a = _write(tmp_path, "a", _panel({"plain": PLAIN, "shipped": SHIPPED}))
    b = _write(tmp_path, "b", _panel({"plain": PLAIN, "variant": VARIANT}))
    assert pair_panels([a, b, "--reference", "plain", "--brief"]) == 0
    rows = {line.split(" | ")[0][2:]: line.strip("| \n").split(" | ")[1:]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "model" not in line}
    for model, scores in (("shipped", SHIPPED), ("variant", VARIANT)):
        significant = []
        for task, cell in zip(TASKS, rows[model]):
            diff, p = np.subtract(scores[task], PLAIN[task]).mean(), stats.ttest_rel(scores[task], PLAIN[task]).pvalue
            text = f"{diff:+.3f}"
            assert cell == (f"**{text}** ({p:.2g})" if p < 0.05 else f"{text} ({p:.2g})")
            significant += [diff] if p < 0.05 else []
        assert rows[model][-1] == f"{sum(d > 0 for d in significant)} / {sum(d < 0 for d in significant)}"
    assert rows["shipped"][1] == "**+0.090** (0.041)" and rows["shipped"][-1] == "1 / 0"    # copa gains
