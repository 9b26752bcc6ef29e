"""Every third-party module the repository imports is declared in setup.cfg: the library's (prefinetune/,
launch/, data_prep/) in install_requires (or, for an optional feature such as a tracker, its own extra,
imported only where it is used), what only tests and benchmarks import in the `dev` extra.

A module that arrives only through another package (scipy through scikit-learn, PIL through matplotlib)
works on the machine that has it and fails on a fresh one, so each import is checked against what
setup.cfg names directly. Modules are mapped to the distributions that provide them by the installed
metadata (importlib.metadata), so no alias table is needed.

    python -m pytest tests/test_declared_dependencies.py -q
"""
from __future__ import annotations

import ast
import configparser
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = ("prefinetune", "launch", "data_prep")
EVERYWHERE = LIBRARY + ("tests", "benchmarks")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(lines: str) -> set[str]:
    names = set()
    for line in lines.splitlines():
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if m and not line.lstrip().startswith("#"):
            names.add(_norm(m.group(1)))
    return names


def declared() -> tuple[set[str], set[str]]:
    """(install_requires, install_requires + every extra) as normalised distribution names."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    base = _requirement_names(cfg.get("options", "install_requires"))
    extras = set().union(*(_requirement_names(v) for _, v in cfg.items("options.extras_require")))
    return base, base | extras


def optional_features() -> set[str]:
    """Distributions of the optional extras a user installs for a feature (`prefinetune[mlflow]`: every
    extra but dev)."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return set().union(*(_requirement_names(v) for k, v in cfg.items("options.extras_require") if k != "dev"))


def top_level_imports(path: Path) -> set[str]:
    """Top-level modules a file imports at module level (not inside a function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _local_names() -> set[str]:
    modules = {p.stem for d in EVERYWHERE for p in (REPO / d).rglob("*.py")}
    return {p.name for p in REPO.iterdir() if p.is_dir()} | modules


def third_party_imports(folders: tuple[str, ...]) -> dict[str, set[str]]:
    """Top-level third-party module -> the files (relative) that import it."""
    local, std = _local_names(), set(sys.stdlib_module_names) | {"__future__"}
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for top in {m.split(".")[0] for m in modules} - local - std:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def undeclared(imports: dict[str, set[str]], allowed: set[str]) -> list[str]:
    providers = packages_distributions()
    missing = []
    for module, files in sorted(imports.items()):
        dists = {_norm(d) for d in providers.get(module, [])}
        if not dists & allowed:
            missing.append(f"{module} (installed from {sorted(dists) or 'nothing'}) imported by {sorted(files)[:3]}")
    return missing


def test_library_imports_are_in_install_requires_or_an_optional_extra_imported_lazily():
    """The library imports what install_requires names; a tracker's package (an optional extra such as
    prefinetune[mlflow]) only inside the functions that use it, so the library imports without it. (The
    module may come from another distribution of a declared extra: `mlflow` from dev's mlflow-skinny.)"""
    base, everything = declared()
    assert optional_features() <= everything
    assert undeclared(third_party_imports(LIBRARY), everything) == []
    providers = packages_distributions()
    for module, files in third_party_imports(LIBRARY).items():
        dists = {_norm(d) for d in providers.get(module, [])}
        if dists & base:
            continue
        eager = [f for f in files if module in top_level_imports(REPO / f)]
        assert not eager, f"{module} (from {sorted(dists)}, an optional extra) is imported at module level by {eager}"


def test_test_and_benchmark_imports_are_declared():
    _, everything = declared()
    assert undeclared(third_party_imports(EVERYWHERE), everything) == []


def test_the_check_sees_an_undeclared_import():
    """The check itself: a module that only arrives through another package is reported."""
    base, _ = declared()
    missing = undeclared({"yaml": {"x.py"}, "tqdm": {"y.py"}}, base - {"pyyaml"})
    assert len(missing) == 1 and missing[0].startswith("yaml (installed from ['pyyaml'])")
