"""Regenerate the golden bitstream vectors (run after changing the golden model or the format):

    .venv/bin/python tests/golden/make_golden.py

Each case is written in every container version facelink writes: ``NAME.flk`` (the current version) and
``NAME.v1.flk``. The version-1 files date from before version 2 existed; a version-1 writer that no longer
reproduces them byte for byte is a bug, not a reason to regenerate them.
"""
import hashlib
import json
from pathlib import Path

import cv2

from facelink.edge.encoder import EdgePipeline
from facelink.shared import bitstream, codec, registry
from facelink.shared.paths import DEMO_FACES_DIR

HERE = Path(__file__).resolve().parent
# The vectors pin the format with one committed rate point, whatever the shipped default (registry.DEFAULT_MODEL).
GOLDEN_MODEL = "face-msh-q4"
CASES = {"colin_powell_crop": ("probe/Colin_Powell_0002.jpg", False),
         "tony_blair_full": ("probe/Tony_Blair_0002.jpg", True)}


def file_name(case: str, version: int) -> str:
    return f"{case}.flk" if version == bitstream.FORMAT_VERSION else f"{case}.v{version}.flk"


def main() -> None:
    meta = {}
    bundle = registry.load(GOLDEN_MODEL)
    for name, (src, full) in CASES.items():
        rgb = cv2.cvtColor(cv2.imread(str(DEMO_FACES_DIR / src)), cv2.COLOR_BGR2RGB)
        meta[name] = {"source": src, "full_frame": full, "model": bundle.name, "model_id": bundle.model_id,
                      "versions": {}}
        for version in bitstream.READABLE_VERSIONS:
            enc = EdgePipeline(GOLDEN_MODEL, full_frame=full, format_version=version).process(rgb)
            (HERE / file_name(name, version)).write_bytes(enc.data)
            y_hat = codec.decompress_latents(bundle.tables, bitstream.unpack(enc.data))
            meta[name]["versions"][str(version)] = {
                "file": file_name(name, version), "bytes": len(enc.data),
                "y_hat_sha256": hashlib.sha256(y_hat.tobytes()).hexdigest(),
                "sha256": hashlib.sha256(enc.data).hexdigest()}
    (HERE / "golden.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
