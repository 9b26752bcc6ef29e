"""Peak memory and time of one training step of MiniLM with and without `model.gradient_checkpointing`.

One slot's forward + log(n)-scaled loss + backward through prefinetune's own model (`build_model`,
`slot_loss`), a classification batch of ROWS x LENGTH tokens, on the CPU. Each configuration runs in a
process of its own, in interleaved rounds. The memory a step adds is the largest resident size sampled
(every 2 ms, psutil) during its steps minus the resident size before them (the model and its weights
loaded): activations plus gradients. The gradients are the same in both; the activations are what
checkpointing trades for recomputation. (The process's lifetime peak would not do: loading the weights
peaks above a checkpointed step.)

    python benchmarks/gradient_checkpointing.py --rounds 2   # writes benchmarks/results/gradient_checkpointing.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm_tasks import MODEL, REPO, write_result  # noqa: E402

ROWS, LENGTH, STEPS = 32, 256, 2


def measure(checkpointing: bool) -> dict:
    """One process's figures: MiB its training steps added at their peak, and a step's seconds (median)."""
    import torch

    from prefinetune.model.multitask import build_model
    from prefinetune.recipe.config import recipe_from_dict
    from prefinetune.run.step import slot_loss

    torch.manual_seed(0)
    recipe = recipe_from_dict({
        "model": {"name_or_path": MODEL, "max_length": LENGTH, "gradient_checkpointing": checkpointing},
        "tasks": [{"name": "t", "label_names": ["a", "b"], "splits": {"train": "x.jsonl"},
                   "columns": {"text": "t", "label": "l"}}],
        "train": {"updates": 1, "slots_per_update": 1, "batch_size": ROWS},
        "scaling": {"num_workers": 1, "use_gpu": False}})
    model = build_model(recipe)
    model.train()
    batch = {"input_ids": torch.randint(1000, 20000, (ROWS, LENGTH)), "attention_mask": torch.ones(ROWS, LENGTH,
             dtype=torch.long), "token_type_ids": torch.zeros(ROWS, LENGTH, dtype=torch.long),
             "labels": torch.randint(0, 2, (ROWS,))}
    seconds = []
    with PeakRss() as peak:
        for _ in range(STEPS):
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            loss, _ = slot_loss(model, 0, recipe.tasks[0], batch)
            loss.backward()
            seconds.append(time.perf_counter() - start)
    return {"checkpointing": checkpointing, "step_added_mib": peak.added_mib, "step_s": float(np.median(seconds))}


class PeakRss:
    """The largest resident size of this process while the block runs, over what it was at the start."""

    def __enter__(self) -> "PeakRss":
        import psutil

        self._process, self._stop = psutil.Process(), threading.Event()
        self.start = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.added_mib = (self.peak - self.start) / 2**20


def _run_one(checkpointing: bool) -> dict:
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import gradient_checkpointing as g; " \
           f"import json; print(json.dumps(g.measure({checkpointing})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gradient_checkpointing.json"))
    args = p.parse_args(argv)
    runs = [_run_one(on) for _ in range(args.rounds) for on in (False, True)]
    median = {on: {k: float(np.median([r[k] for r in runs if r["checkpointing"] == on]))
                   for k in ("step_added_mib", "step_s")} for on in (False, True)}
    result = {"model": MODEL, "rows": ROWS, "length": LENGTH, "rounds": args.rounds, "runs": runs,
              "without": median[False], "with": median[True],
              "memory_ratio": median[True]["step_added_mib"] / median[False]["step_added_mib"],
              "time_ratio": median[True]["step_s"] / median[False]["step_s"],
              "what": "MiB one training step (forward, loss, backward) adds to the process's peak RSS, and its "
                      "seconds; with / without gradient checkpointing, medians over rounds, CPU"}
    print(f"step adds {median[False]['step_added_mib']:.0f} MiB without, {median[True]['step_added_mib']:.0f} MiB "
          f"with checkpointing ({result['memory_ratio']:.2f}x); time {result['time_ratio']:.2f}x")
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
