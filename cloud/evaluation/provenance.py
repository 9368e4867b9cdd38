"""Provenance recorded with every result: git state, package versions, host; and writing a result document."""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path

from facelink.shared.paths import REPO_ROOT

CORE_PACKAGES = ("facelink", "numpy", "torch", "compressai", "onnxruntime", "opencv-python-headless")


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=REPO_ROOT or Path.cwd(), capture_output=True, text=True, timeout=30)
        return r.stdout.strip() if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def git_state() -> dict:
    """Commit and whether tracked files differ from it (untracked files do not make a result dirty)."""
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": _git("rev-parse", "HEAD"), "dirty": None if dirty is None else bool(dirty)}


def package_versions(packages=CORE_PACKAGES) -> dict:
    out = {"python": platform.python_version()}
    for p in packages:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = None
    return out


def host() -> dict:
    return {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count()}


def stamp(doc: dict, packages=CORE_PACKAGES) -> dict:
    """``doc`` with a ``provenance`` block added."""
    return dict(doc, provenance={"git": git_state(), "packages": package_versions(packages), "host": host(),
                                 "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})


def emit_json(doc: dict, out: Path | None) -> None:
    """Print a result document and, if ``out`` is given, write it there (folders created)."""
    text = json.dumps(doc, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
