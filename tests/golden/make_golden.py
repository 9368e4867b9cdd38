"""Regenerate the golden bitstream vectors (run after changing the default model or the format):

    .venv/bin/python tests/golden/make_golden.py
"""
import hashlib
import json
from pathlib import Path

import cv2

from facelink.edge.encoder import EdgePipeline
from facelink.shared import bitstream, codec, registry
from facelink.shared.paths import DEMO_FACES_DIR

HERE = Path(__file__).resolve().parent
CASES = {"colin_powell_crop": ("probe/Colin_Powell_0002.jpg", False),
         "tony_blair_full": ("probe/Tony_Blair_0002.jpg", True)}


def main() -> None:
    meta = {}
    for name, (src, full) in CASES.items():
        rgb = cv2.cvtColor(cv2.imread(str(DEMO_FACES_DIR / src)), cv2.COLOR_BGR2RGB)
        enc = EdgePipeline(full_frame=full).process(rgb)
        (HERE / f"{name}.flk").write_bytes(enc.data)
        bundle = registry.load()
        y_hat = codec.decompress_latents(bundle.tables, bitstream.unpack(enc.data))
        meta[name] = {"source": src, "full_frame": full, "model": bundle.name, "model_id": bundle.model_id,
                      "bytes": len(enc.data), "y_hat_sha256": hashlib.sha256(y_hat.tobytes()).hexdigest(),
                      "sha256": hashlib.sha256(enc.data).hexdigest()}
    (HERE / "golden.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
