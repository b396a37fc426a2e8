"""The dependencies in pyproject.toml are the ones the code imports: every third-party module that
src/training_agent imports is a declared distribution (the trainer's modules may also use the `trainer`
extra, the tests the `trainer` and `dev` extras), and every declared run-time distribution is imported.

Modules are walked with `ast` (imports inside functions and TYPE_CHECKING blocks too) and matched to the
installed distributions that provide them (`importlib.metadata.packages_distributions()`; for a namespace
package such as `google`, by the files each distribution installs under `google/<name>/`)."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10; CI runs 3.11
    pytest.skip("reads pyproject.toml with tomllib (Python 3.11+)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "training_agent"
FIRST_PARTY = {"training_agent", "tests", "benchmarks"}


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them (Pillow, pillow; google_api_core, google-api-core)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, set[str]]:
    """The distributions pyproject.toml declares: `base` (dependencies) and each extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"base": project["dependencies"], **project["optional-dependencies"]}
    name = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
    return {
        group: {normalized(m.group(1)) for spec in specs if (m := name.match(spec))}
        for group, specs in groups.items()
    }


def imported_modules(files: Iterable[Path]) -> dict[str, set[Path]]:
    """Each absolute import's module name (`google.cloud.storage`, `PIL.Image`) and the files naming it."""
    found: dict[str, set[Path]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name, set()).add(path.relative_to(ROOT))
    return found


def third_party(module: str) -> str | None:
    """The name to look the module up by: its top-level package, or two levels for a namespace package
    (`google.cloud`, `google.api_core`); None for the standard library and this repository's own code."""
    top = module.split(".", maxsplit=1)[0]
    if top in sys.stdlib_module_names or top in FIRST_PARTY:
        return None
    spec = importlib.util.find_spec(top)
    namespace = spec is not None and spec.origin in (None, "namespace") and "." in module
    return ".".join(module.split(".")[:2]) if namespace else top


@cache
def distributions_by_package() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


@cache
def files_by_distribution() -> dict[str, set[str]]:
    return {
        normalized(dist.metadata["Name"]): {str(f) for f in dist.files or ()}
        for dist in importlib.metadata.distributions()
    }


def providers(name: str) -> set[str]:
    """The installed distributions that provide the module `name` (top-level, or `ns.sub`)."""
    if "." not in name:
        return {normalized(d) for d in distributions_by_package().get(name, [])}
    path = name.replace(".", "/")
    return {
        dist
        for dist, files in files_by_distribution().items()
        if any(f.startswith(f"{path}/") or f == f"{path}.py" for f in files)
    }


def undeclared(files: Iterable[Path], allowed: set[str]) -> list[str]:
    """One line per imported package that no distribution in `allowed` provides, naming a file using it."""
    users: dict[str, set[Path]] = {}
    for module, where in imported_modules(files).items():
        name = third_party(module)
        if name is not None:
            users.setdefault(name, set()).update(where)
    problems = []
    for name, where in sorted(users.items()):
        found, first = providers(name), sorted(map(str, where))[0]
        if not found:
            problems.append(f"{name} (imported by {first}) is not installed")
        elif not found & allowed:
            problems.append(f"{name} (imported by {first}) comes from undeclared {sorted(found)}")
    return problems


def python_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def test_src_imports_only_declared_distributions() -> None:
    groups = declared()
    trainer = SRC / "trainer"
    outside = [p for p in python_files(SRC) if trainer not in p.parents]
    assert undeclared(outside, groups["base"]) == []
    assert undeclared(python_files(trainer), groups["base"] | groups["trainer"]) == []


def test_tests_import_only_declared_distributions() -> None:
    groups = declared()
    allowed = groups["base"] | groups["trainer"] | groups["dev"]
    assert undeclared(python_files(ROOT / "tests") + python_files(ROOT / "benchmarks"), allowed) == []


def test_every_run_time_dependency_is_imported() -> None:
    """A dependency nothing imports only makes the install bigger (pyyaml was one: only the tests read
    YAML, so it is a dev dependency)."""
    groups = declared()
    used: set[str] = set()
    for module in imported_modules(python_files(SRC)):
        name = third_party(module)
        if name is not None:
            used |= providers(name)
    assert sorted((groups["base"] | groups["trainer"]) - used) == []


def test_the_check_sees_what_it_must() -> None:
    """The walk finds lazy and namespace imports, and tells a declared distribution from an undeclared one."""
    modules = imported_modules([SRC / "core" / "storage" / "gcs.py", SRC / "cli_train.py"])
    assert "google.api_core" in modules and "training_agent.trainer.pipeline" in modules  # lazy, in _lead
    assert third_party("google.api_core.exceptions") == "google.api_core"
    assert providers("google.api_core") == {"google-api-core"}
    assert providers("PIL") == {"pillow"}
    assert undeclared([SRC / "core" / "storage" / "gcs.py"], {"google-cloud-storage"}) != []
