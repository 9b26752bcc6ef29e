"""Pair models from different panels by seed: each model against a reference model, per task and on
the average (prefinetune/finetune/panel_merge.py), as a markdown table on stdout and JSON with --out.
The README's transfer study uses it to pair a variant's export with the shipped recipe's, each in its
own panel:

    python benchmarks/pair_panels.py benchmarks/results/transfer_study/panel_0.1.json \
        benchmarks/results/transfer_study/lr2e5_panel_0.1.json --reference prefinetune_minilm_cpu \
        --out benchmarks/results/transfer_study/lr2e5_vs_shipped.json

Shared models must score the same in every panel; --tolerance 1e-6 lets panels run on two machines pair
through float rounding (the README's ablation measured 7.7e-7 on stsb), and the table says how far apart
the scores it accepted were. --brief prints one cell a task (Δ and p, bold where p < 0.05) and each
model's count of significant gains and losses: the README's ablation at a glance.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefinetune.finetune.panel import brief_delta_table, delta_table, versus  # noqa: E402
from prefinetune.finetune.panel_merge import merge_panels, read_panel  # noqa: E402
from prefinetune.finetune.plan import FinetuneError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("panels", nargs="+", help="panel.json files of the same tasks, fractions and seeds")
    p.add_argument("--reference", required=True, help="the model every other is paired with")
    p.add_argument("--out", help="write the paired differences here as JSON")
    p.add_argument("--tolerance", type=float, default=0.0,
                   help="how far a shared model's scores may differ between panels (default 0: equal)")
    p.add_argument("--brief", action="store_true",
                   help="one cell a task: the difference and its p, bold where p < 0.05, and the count of "
                        "significant gains and losses (the intervals and wins stay in --out)")
    args = p.parse_args(argv)
    try:
        merged = merge_panels([read_panel(path) for path in args.panels], args.panels, args.tolerance)
        deltas = versus(merged, args.reference)
    except (FinetuneError, OSError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not merged["complete"]:
        print("PARTIAL: a panel has unfinished trials; the pairs are over the seeds both models finished\n")
    if merged["largest_difference"]:
        print(f"The shared models' scores differ by up to {merged['largest_difference']:.2g} between the panels "
              f"(--tolerance {args.tolerance:g}); the first panel's are used.\n")
    table = brief_delta_table if args.brief else delta_table
    print("\n".join(table(merged, deltas, args.reference)))
    if args.out:
        Path(args.out).write_text(json.dumps({"panels": args.panels, "reference": args.reference,
                                              "complete": merged["complete"], "tolerance": args.tolerance,
                                              "largest_difference": merged["largest_difference"],
                                              "vs_reference": deltas},
                                             indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
