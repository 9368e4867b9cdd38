"""The model registry: rate points by name, each a folder with a manifest whose sha256s are checked on load."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from facelink.shared import tables as tables_mod
from facelink.shared.detection import IntegrityError, sha256_file
from facelink.shared.paths import MODELS_DIR

DEFAULT_MODEL = "face-msh-q4"


class UnknownModelError(LookupError):
    pass


@dataclass(frozen=True)
class ModelBundle:
    name: str
    path: Path
    manifest: dict
    tables: tables_mod.ModelTables

    @property
    def model_id(self) -> str:
        return self.tables.model_id

    @property
    def encoder_onnx(self) -> Path:
        return self.path / "encoder.onnx"

    @property
    def weights(self) -> Path:
        return self.path / "codec.safetensors"


def available(root: Path | None = None) -> list[str]:
    root = root or MODELS_DIR
    return sorted(p.parent.name for p in root.glob("*/manifest.json"))


def _folder(name_or_path: str | None, root: Path | None) -> Path:
    if name_or_path and (Path(name_or_path) / "manifest.json").is_file():
        return Path(name_or_path)
    name = name_or_path or DEFAULT_MODEL
    folder = (root or MODELS_DIR) / name
    if not (folder / "manifest.json").is_file():
        raise UnknownModelError(f"no model {name!r} in the registry {root or MODELS_DIR}; "
                                f"available: {', '.join(available(root)) or 'none'}")
    return folder


def load(name_or_path: str | None = None, root: Path | None = None, verify: bool = True) -> ModelBundle:
    """Load a rate point by registry name (default :data:`DEFAULT_MODEL`) or folder path, checking sha256s."""
    folder = _folder(name_or_path, root)
    return _load(str(folder.resolve()), verify)


@lru_cache(maxsize=16)
def _load(folder: str, verify: bool) -> ModelBundle:
    path = Path(folder)
    manifest = json.loads((path / "manifest.json").read_text())
    if verify:
        for fname, digest in manifest["files"].items():
            if not (path / fname).is_file():
                raise IntegrityError(f"model {manifest['name']}: {fname} is missing")
            got = sha256_file(path / fname)
            if got != digest:
                raise IntegrityError(f"model {manifest['name']}: {fname} has sha256 {got}, manifest says {digest}")
    tables = tables_mod.load(path / "tables.npz")
    if tables.model_id != manifest["model_id"]:
        raise IntegrityError(f"model {manifest['name']}: tables hash to {tables.model_id}, manifest says "
                             f"{manifest['model_id']}")
    return ModelBundle(manifest["name"], path, manifest, tables)
