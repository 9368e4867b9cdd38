"""The architecture's import boundaries, enforced on the source (every import statement, lazy ones included).

Layers, lowest first; a layer may import only itself and the layers listed for it:

- ``facelink.shared``: code both sides use. Imports nothing else of facelink (and never torch).
- ``facelink.v1``: the generated gRPC API. Imports nothing else of facelink.
- ``facelink.edge``: the device. shared and v1 only (and never torch).
- ``facelink.cloud.serving``: the server and what it runs per frame. shared and v1 only: serving never
  imports training, evaluation or benchmarks.
- ``facelink.cloud.training``: training, export. shared, edge (to code latents exactly as a camera does) and serving.
- ``facelink.cloud.evaluation``: the verification protocol, the codec as one object. shared, edge, serving,
  training.
- ``facelink.cloud`` itself (the ``facelink`` CLI, the demo): anything of cloud, shared, edge, v1. The CLI reaches
  the benchmarks by module name only, so that ``facelink --help`` imports none of them.
- ``facelink.benchmarks``: on top of everything; nothing imports it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {  # package -> folder, as pyproject.toml maps them
    "facelink.shared": ROOT / "shared",
    "facelink.v1": ROOT / "proto" / "facelink" / "v1",
    "facelink.edge": ROOT / "edge",
    "facelink.cloud": ROOT / "cloud",
    "facelink.benchmarks": ROOT / "benchmarks",
}
ALLOWED = {
    "facelink.shared": {"facelink.shared"},
    "facelink.v1": {"facelink.v1"},
    "facelink.edge": {"facelink.edge", "facelink.shared", "facelink.v1"},
    "facelink.cloud.serving": {"facelink.cloud.serving", "facelink.shared", "facelink.v1"},
    "facelink.cloud.training": {"facelink.cloud.training", "facelink.cloud.serving", "facelink.edge",
                                "facelink.shared"},
    "facelink.cloud.evaluation": {"facelink.cloud.evaluation", "facelink.cloud.training", "facelink.cloud.serving",
                                  "facelink.edge", "facelink.shared"},
    "facelink.cloud": {"facelink.cloud", "facelink.edge", "facelink.shared", "facelink.v1"},
    "facelink.benchmarks": {"facelink"},
}
TORCH_FREE = ("facelink.shared", "facelink.edge", "facelink.v1")
TORCH = ("torch", "torchvision", "compressai", "facenet_pytorch")


def _layer(module: str) -> str:
    """The most specific layer a module belongs to."""
    return max((k for k in ALLOWED if module == k or module.startswith(k + ".")), key=len)


def _modules():
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            yield ".".join([package, *parts]), path


def _imports(module: str, path: Path, known: set[str]):
    """(line, imported module) for every import in the file, relative ones resolved; ``from P import m`` counts as
    importing ``P.m`` where that is a module."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            for a in node.names:
                sub = f"{name}.{a.name}"
                yield node.lineno, sub if sub in known else name


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return "/".join(path.parts[-3:])


def _violations():
    modules = dict(_modules())
    out = []
    for module, path in modules.items():
        layer = _layer(module)
        for line, imported in _imports(module, path, set(modules)):
            where = f"{_rel(path)}:{line} imports {imported}"
            top = imported.split(".")[0]
            if top in TORCH and module.startswith(TORCH_FREE):
                out.append(f"{where} (torch on the edge side)")
            if top != "facelink":
                continue
            if not any(imported == a or imported.startswith(a + ".") for a in ALLOWED[layer]):
                out.append(f"{where} ({layer} may import only {', '.join(sorted(ALLOWED[layer]))})")
    return out


def test_layers_import_only_downwards():
    assert _violations() == []


def test_boundary_check_catches_a_violation(tmp_path, monkeypatch):
    """The checker itself works: a serving module that imports the benchmarks is reported."""
    fake = tmp_path / "cloud" / "serving"
    fake.mkdir(parents=True)
    (fake / "leak.py").write_text("from facelink.benchmarks import engine\nimport torch\n")
    (tmp_path / "edge").mkdir()
    (tmp_path / "edge" / "leak.py").write_text("def f():\n    import torch\n    from facelink.cloud import serving\n")
    monkeypatch.setitem(SOURCES, "facelink.cloud", tmp_path / "cloud")
    monkeypatch.setitem(SOURCES, "facelink.edge", tmp_path / "edge")
    found = "\n".join(_violations())
    assert "cloud/serving/leak.py:1 imports facelink.benchmarks" in found
    assert "edge/leak.py:2 imports torch (torch on the edge side)" in found
    assert "edge/leak.py:3 imports facelink.cloud" in found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_every_layer_has_modules(layer):
    assert any(_layer(m) == layer for m, _ in _modules())
