"""The console of `prefinetune compare`: a line per trial as it finishes or fails, counted out of all
(a Ray Tune callback, run in the driver)."""
from __future__ import annotations

import json

from ray.tune import Callback

from prefinetune.run.console import say

__all__ = ["TrialProgress"]


class TrialProgress(Callback):
    def __init__(self, total: int):
        self.total, self.ended = total, 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended += 1
        result = json.loads((trial.last_result or {}).get("result_json", "{}") or "{}")
        say(f"[compare] trial {self.ended}/{self.total} done: {_describe(result)}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.ended += 1
        say(f"[compare] trial {self.ended}/{self.total} FAILED: {trial.trial_id} (its error: {trial.local_path})")


def _describe(result: dict) -> str:
    if not result:
        return "(no result)"
    t, m = result["trial"], result["metrics"]
    point = " ".join(f"{k}={v}" for k, v in t["point"].items())
    scores = " ".join(f"{k.split('/')[0]} {k.split('/')[2]} {v:.3f}" for k, v in m.items()
                      if k.count("/") == 2 and not k.endswith("/rows"))
    kept = ""
    if result.get("reused_from"):           # prefinetune/finetune/trial_reuse.py
        kept = f" (copied from {result['reused_from']}, not trained again)"
    elif result.get("kept"):
        kept = " (saved before an interruption, not trained again)"
    return f"{t['model']} fraction {t['fraction']} seed {t['seed']} {point}: {scores}{kept}"
