"""How much of R3F's noise survives rounding: the fraction of a model's input embedding values that adding
z ~ N(0, sigma^2) changes once both are in fp32, fp16 or bf16 (the precision a GPU run trains in).

    python benchmarks/r3f_noise_precision.py --out benchmarks/results/r3f_noise_precision.json

Measured on 4096 rows of the embedding matrix, seed 0 (prefinetune.losses.r3f.noise_survival).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm_tasks import MODEL, REPO, write_result  # noqa: E402

from prefinetune.losses.r3f import noise_survival  # noqa: E402
from prefinetune.model.source import NO_HUB_KERNELS, resolve_model_source  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=MODEL)
    p.add_argument("--sigmas", type=float, nargs="+", default=[1e-5, 1e-4, 1e-3])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "r3f_noise_precision.json"))
    args = p.parse_args(argv)
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(resolve_model_source(args.model), **NO_HUB_KERNELS)
    embeddings = backbone.get_input_embeddings().weight
    table = {name: {f"{s:g}": noise_survival(embeddings, s, "normal", dtype) for s in args.sigmas}
             for name, dtype in DTYPES.items()}
    for name, row in table.items():
        print(f"{name}: " + ", ".join(f"sigma {s}: {kept:.1%}" for s, kept in row.items()))
    out = {"settings": {"model": args.model, "rows": 4096, "noise": "normal", "seed": 0,
                        "what": "fraction of input embedding values that x + z changes in each dtype",
                        "median_abs_embedding": float(embeddings.detach().abs().median())},
           "kept": table}
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
