"""The held-out study's report from its comparisons' summaries: the main table (model x task x fraction),
the task-count sweep table at the low fraction, and the plot (made here from a summary built by hand).

    python -m pytest tests/finetune/test_study_report.py -q
"""
from __future__ import annotations

from prefinetune.finetune.study import plot_study, study_markdown


def _summary(task, models, fractions, base):
    rows = [{"model": m, "fraction": f, "test_mean": base + 0.01 * i + f / 10, "test_std": 0.02, "seeds": 3}
            for i, m in enumerate(models) for f in fractions]
    return {"task": task, "models": {m: m for m in models}, "rows": rows, "test_split": "test", "metric": "accuracy",
            "select_split": "dev", "seeds": 3, "fractions": fractions}


def test_study_tables_and_plot(tmp_path):
    study = {"command": "python launch/heldout_study.py --data-dir D", "seeds": 3, "fractions": [0.1, 1.0],
             "main": {t: _summary(t, ["minilm", "p19"], [0.1, 1.0], 0.5) for t in ("cb", "trec")},
             "sweep": {t: _summary(t, ["p4", "p8"], [0.1], 0.4) for t in ("cb", "trec")}}
    text = study_markdown(study)
    assert "| cb (test, accuracy) | p19 | 0.520 ± 0.020 | 0.610 ± 0.020 |" in text
    assert "| trec | 0.510 ± 0.020 | 0.410 ± 0.020 | 0.420 ± 0.020 | 0.520 ± 0.020 |" in text
    assert text.rstrip().endswith("`python launch/heldout_study.py --data-dir D`")
    assert plot_study(study, tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
