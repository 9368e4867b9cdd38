"""A device kit for core v2: what a chunk of training on a borrowed accelerator needs beside the working tree.

A device machine has a stock PyTorch image (its own Python, torch and numpy), none of the data sets and no
compressai build for its interpreter. ``facelink core-v2 device-kit --config CONFIG --out runs/device-kit`` writes:

- ``core-v2-pack.npz``: the run's aligned training crops, 14 MB of whole training frames and the validation batch
  (:mod:`.core_v2_pack`), unless it is there already (delete an older, crops-only pack to get the frames);
- ``site/``: the pure-Python parts of the installed compressai and pytorch-msssim, which the training imports, with
  compressai's two compiled modules replaced by stand-ins that import and construct but refuse to code (training
  computes likelihoods, never a bitstream; the milestone export reads the checkpoint on the CPU).

The chunk itself is ``cloud/training/core_v2_device_chunk.sh`` run from the working tree's root on the device, with
``runs/device-kit`` travelling beside the tree (56.9 MB). It trains core v2 and its α = 0 ablation (batch 32 each,
``V2_BATCH`` and ``A0_BATCH``; transforms in ``PRECISION``, default the configurations' ``auto``: bfloat16 on a GPU that
has it; checkpoints every 3 minutes) side by side on the one accelerator from the committed milestones: a three-step
smoke run of each first (through validation, checkpoint and milestone export, so that a broken environment costs
seconds), then ``MIN`` minutes of each (default 7.5: the whole command then takes about 9 minutes, under a 10-minute
limit), then both milestones and both progress files go to ``$OUT``.

Here afterwards: stop the CPU runs; put the returned milestones into ``cloud/training/checkpoints/``; ``facelink
core-v2 merge-progress --config CONFIG RETURNED_PROGRESS.json`` for each run (appends the entries the local file
lacks); move ``~/.cache/facelink/core-v2`` and ``core-v2-a0`` aside; start the CPU runs again: they continue from
the device's steps (with fresh optimizer states). On a machine of one's own with the data sets, ``facelink core-v2
train --device cuda`` needs none of this.

Where what travels must stay under a size limit, note that the chunk needs nothing under
``shared/resources/models`` (the committed rate points, about 34 MB).
"""
from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

# Packages the training imports that a stock PyTorch image may lack; copied from this installation, pure Python only.
KIT_PACKAGES = ("compressai", "pytorch_msssim")
PACK_NAME = "core-v2-pack.npz"

_CXX_STAND_IN = '''"""Stand-in for compressai's compiled helper on a device machine (facelink core-v2 device-kit): not
built for that interpreter, and training never calls it."""


def pmf_to_quantized_cdf(*args, **kwargs):
    raise NotImplementedError("compressai._CXX is not built on this machine: training only (facelink device kit)")
'''

_ANS_STAND_IN = '''"""Stand-in for compressai's compiled rANS coder on a device machine (facelink core-v2 device-kit):
entropy models construct their coders, training never codes with them."""


class _NotBuilt:
    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        raise NotImplementedError("compressai.ans is not built on this machine: training only (facelink device kit)")


class BufferedRansEncoder(_NotBuilt):
    pass


class RansEncoder(_NotBuilt):
    pass


class RansDecoder(_NotBuilt):
    pass
'''


def write_site(site: Path) -> dict:
    """Copy :data:`KIT_PACKAGES` (Python files only) into ``site`` with compressai's compiled modules stood in for;
    returns {package: version}."""
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    versions = {}
    for name in KIT_PACKAGES:
        mod = importlib.import_module(name)
        src = Path(mod.__file__).parent
        shutil.copytree(src, site / name, ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
        versions[name] = getattr(mod, "__version__", "?")
    (site / "compressai" / "_CXX.py").write_text(_CXX_STAND_IN)
    (site / "compressai" / "ans.py").write_text(_ANS_STAND_IN)
    return versions


def write_kit(cfg, out: Path, assets=None) -> dict:
    """Write the device kit of run configuration ``cfg`` into ``out`` (the pack only if missing); returns its
    summary."""
    from facelink.cloud.training.core_v2_pack import read_meta, write_pack

    out.mkdir(parents=True, exist_ok=True)
    pack = out / PACK_NAME
    meta = read_meta(pack) if pack.is_file() else write_pack(cfg, pack, assets)
    versions = write_site(out / "site")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    summary = {"kit": str(out), "pack": str(pack), "crops": meta["crops"], "frames": meta.get("frames", 0),
               "site_packages": versions,
               "bytes": size}
    (out / "kit.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
