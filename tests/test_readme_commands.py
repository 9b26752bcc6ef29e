"""The README's set-up commands are the ones CI runs: `.ci/run` makes a new virtual environment, sets
the hub offline, and runs the README's test command in it, word for word.

    python -m pytest tests/test_readme_commands.py -q
"""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The bash blocks of the README's "Two commands" section."""
    section = (REPO / "README.md").read_text().split("## Two commands")[1].split("\n## ")[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_ci_runs_the_readme_test_command_in_a_new_venv():
    main_job, tests = readme_commands()[:2]
    assert main_job.startswith("pip install torch==2.13.0 && ") and main_job.endswith("python launch/local_cpu.py")
    assert tests.startswith("pip install torch==2.13.0 && ") and tests.endswith("python -m pytest")
    ci = (REPO / ".ci" / "run").read_text()
    lines = [line.strip() for line in ci.splitlines()]
    assert tests in lines, "the README's test command and .ci/run are out of step"
    venv = next(i for i, line in enumerate(lines) if re.match(r"python3? -m venv ", line))
    activate = next(i for i, line in enumerate(lines) if "/bin/activate" in line)
    assert venv < activate < lines.index(tests)
    assert "HF_HUB_OFFLINE=1" in ci and "HF_DATASETS_OFFLINE=1" in ci
