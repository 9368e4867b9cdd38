"""The model registry: rate points by name, each a folder with a manifest whose sha256s are checked on load."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from facelink.shared import tables as tables_mod
from facelink.shared.detection import IntegrityError, sha256_file
from facelink.shared.paths import MODELS_DIR

# The model the edge, the server and the demo run unless told otherwise. face-v2 is the variable-rate core v2 (one
# network for every rate; the edge codes at its manifest's default_quality unless given --quality or --max-bytes).
# It replaced the committed face-ipr ladder (face-ipr-q1 was the default) because it needs fewer bytes for the same
# accuracy on both data sets with every recognizer measured; the figures and the commands that made them are in
# README.md (Results) and benchmarks/research.md (section 18). The ladder stays in the registry for edges that send it.
DEFAULT_MODEL = "face-v2"
MODELS_PATH_ENV = "FACELINK_MODELS_PATH"
ADAPTER_FILE_KEYS = ("file", "ablation")  # keys of a manifest's "adapters" entry that name files


class UnknownModelError(LookupError):
    pass


class AmbiguousModelError(UnknownModelError):
    """One name, several registry folders, different files."""


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
        """The synthesis transform's weights (the cloud's; the edge never opens them)."""
        return self.path / "decoder.safetensors"

    @property
    def adapter_files(self) -> tuple[str, ...]:
        """The face-domain adapter files the manifest lists (``adapters``: file, and an α = 0 ablation): the
        cloud's, decoder-only, so they change neither the model id nor any bitstream."""
        entry = self.manifest.get("adapters") or {}
        return tuple(entry[k] for k in ADAPTER_FILE_KEYS if k in entry)


@dataclass(frozen=True)
class QualityRange:
    """A variable-rate model's qualities as its manifest states them."""
    top: int  # the highest integer quality (the range is [0, top])
    default: float  # what an edge codes at unless told (manifest ``default_quality``; 0 when a manifest has none)
    lambdas: dict[str, float]  # λ per integer quality


def quality_range(manifest: dict) -> QualityRange | None:
    """The quality range of a variable-rate model's manifest (None for a rate point): the one reading of these
    fields for the edge's encoder, its model listing and the model table."""
    if not manifest.get("qualities"):
        return None
    lambdas = {str(k): float(v) for k, v in (manifest.get("lambda_of_quality") or {}).items()}
    return QualityRange(int(manifest["qualities"]) - 1, float(manifest.get("default_quality", 0.0)), lambdas)


def roots(root: Path | None = None) -> list[Path]:
    """Folders searched for rate points: ``root`` if given, else the package's registry followed by the folders
    in ``$FACELINK_MODELS_PATH`` (``os.pathsep``-separated; for models that are not committed, e.g. ablations)."""
    if root is not None:
        return [Path(root)]
    extra = [Path(p) for p in os.environ.get(MODELS_PATH_ENV, "").split(os.pathsep) if p]
    return [MODELS_DIR, *extra]


def names_by_model_id(bundles) -> dict[str, list[str]]:
    """The names of ``bundles`` grouped by model id, in their order. Several names under one id share a bitstream
    (same encoder and tables) and differ only in the decoder: a refined one, or another weight precision."""
    out: dict[str, list[str]] = {}
    for b in bundles:
        out.setdefault(b.model_id, []).append(b.name)
    return out


def available(root: Path | None = None) -> list[str]:
    return sorted({p.parent.name for r in roots(root) for p in r.glob("*/manifest.json")})


def _folder(name_or_path: str | None, root: Path | None) -> Path:
    if name_or_path and (Path(name_or_path) / "manifest.json").is_file():
        return Path(name_or_path)
    name = name_or_path or DEFAULT_MODEL
    found = [r / name for r in roots(root) if (r / name / "manifest.json").is_file()]
    if found:
        _check_one_model(name, found)
        return found[0]
    raise UnknownModelError(f"no model {name!r} in the registry ({', '.join(map(str, roots(root)))}); "
                            f"available: {', '.join(available(root)) or 'none'}")


def _check_one_model(name: str, folders: list[Path]) -> None:
    """A name found in several registry folders must name the same files everywhere: otherwise which one loads
    would depend on the search order, and a measurement or a server could silently use another model than meant."""
    files = [json.loads((f / "manifest.json").read_text()).get("files") for f in folders]
    if any(f != files[0] for f in files[1:]):
        raise AmbiguousModelError(f"model {name!r} is in {len(folders)} registry folders with different files "
                                  f"({', '.join(map(str, folders))}): rename or remove all but one (${MODELS_PATH_ENV} "
                                  "adds folders after the package's own)")


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
    entry = manifest.get("adapters") or {}
    unlisted = [entry[k] for k in ADAPTER_FILE_KEYS if k in entry and entry[k] not in manifest["files"]]
    if unlisted:
        raise IntegrityError(f"model {manifest['name']}: adapters {', '.join(unlisted)} have no sha256 in the manifest")
    tables = tables_mod.load(path / "tables.npz")
    if tables.model_id != manifest["model_id"]:
        raise IntegrityError(f"model {manifest['name']}: tables hash to {tables.model_id}, manifest says "
                             f"{manifest['model_id']}")
    return ModelBundle(manifest["name"], path, manifest, tables)
