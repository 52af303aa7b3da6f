"""The architecture as the imports show it: read from the source, nothing imported or run."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("fedrun"), ids=lambda p: str(p.relative_to(ROOT)))
def test_fedrun_uses_only_clusters_interface_and_never_the_benchmark(path: Path) -> None:
    imported = _imports(path)
    assert [name for name in imported if name.startswith("cluster.")] == [], "import from `cluster` itself"
    if "bench" not in path.relative_to(ROOT / "fedrun").parts:
        assert [name for name in imported if name.startswith("fedrun.bench")] == []


@pytest.mark.parametrize("path", _modules("cluster"), ids=lambda p: str(p.relative_to(ROOT)))
def test_cluster_knows_nothing_of_fedrun_or_tensorflow(path: Path) -> None:
    imported = {name.split(".")[0] for name in _imports(path)}
    assert not imported & {"fedrun", "tensorflow", "tensorflow_federated"}


def test_no_package_has_more_than_about_ten_modules_side_by_side() -> None:
    for package in [p for p in (ROOT / "fedrun").rglob("*") if p.is_dir() and p.name != "__pycache__"]:
        assert len(list(package.glob("*.py"))) <= 12, package
