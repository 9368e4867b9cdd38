"""One home for every filesystem location facelink reads by default.

Data and weights that no registry serves live in ``../shared/assets`` beside a checkout (or wherever
``FACELINK_ASSETS`` points); small files the project needs at run time are shipped inside the package
under ``resources/``.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
RESOURCES_DIR = PACKAGE_DIR / "resources"
MODELS_DIR = RESOURCES_DIR / "models"
DETECTORS_DIR = RESOURCES_DIR / "detectors"
# Recognizer weights are cloud-only: they ship inside facelink.cloud, not with the edge package.
RECOGNIZERS_DIR = PACKAGE_DIR.parent / "cloud" / "resources" / "recognizers"
DEMO_FACES_DIR = RESOURCES_DIR / "demo_faces"
# Committed verification protocols (pair files) that facelink defines itself, e.g. the CelebA test pairs.
PROTOCOLS_DIR = PACKAGE_DIR.parent / "benchmarks" / "protocols"

# The checkout's root when facelink runs from a source tree (editable install); None when installed as a wheel.
_candidate_root = PACKAGE_DIR.parent
REPO_ROOT: Path | None = _candidate_root if (_candidate_root / "pyproject.toml").is_file() else None


class MissingAssetError(FileNotFoundError):
    """A data set or weight file that facelink needs is not where configuration says it is."""


def assets_dir(override: str | os.PathLike | None = None) -> Path:
    """The folder holding LFW, the CelebA faces and the recognizer weights.

    Order: an explicit ``override``, then ``$FACELINK_ASSETS``, then ``../shared/assets`` beside the checkout.
    """
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get("FACELINK_ASSETS")
    if env:
        return Path(env).expanduser().resolve()
    base = REPO_ROOT if REPO_ROOT is not None else Path.cwd()
    return (base.parent / "shared" / "assets").resolve()


def require(path: Path, what: str) -> Path:
    """Return ``path`` if it exists, else raise a message that says what is missing and how to point at it."""
    if not path.exists():
        raise MissingAssetError(
            f"{what} not found at {path}. Put the assets beside the checkout as ../shared/assets, "
            f"set FACELINK_ASSETS, or pass --assets."
        )
    return path


def runs_dir() -> Path:
    """Scratch space for training runs and caches (ignored by git)."""
    base = REPO_ROOT if REPO_ROOT is not None else Path.home() / ".cache" / "facelink"
    return Path(os.environ.get("FACELINK_RUNS", base / "runs"))
