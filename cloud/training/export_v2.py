"""Export a trained variable-rate codec (core v2) into a registry model edge and cloud load, as
:mod:`facelink.cloud.training.export` does for a rate point, with the quality as an input:

- ``encoder.onnx``: ``image`` (1, 3, H, W) in [0, 1] and ``gain`` (1, M) → the gained latent ``y`` and ``z``; the
  edge computes the gain of its quality from the tables (:meth:`facelink.shared.tables.ModelTables.gain`);
- ``tables.npz``: the entropy-coding tables, the integer hyper-synthesis and the gain table (``vr_log_gains``), all
  under the model id (the content hash, as for every model);
- ``decoder.safetensors``: the synthesis ``g_s`` and the inverse gains ``log_inv_gain`` (the cloud's part);
- ``manifest.json``: architecture ``facelink-vr-msh-v1``, N, M, qualities, the λ of each quality, provenance.

Containers of this model are version 3: they carry the quality, whose inverse gain the cloud applies.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

from facelink.cloud.serving.variable_rate import ARCHITECTURE, VariableRateFaceCodec, lmbda
from facelink.cloud.training import export as fixed
from facelink.shared import registry
from facelink.shared import tables as tables_mod
from facelink.shared.detection import sha256_file


def export_tables(model: VariableRateFaceCodec) -> tables_mod.ModelTables:
    """The fixed-rate tables of the same hyperprior, under this architecture's name, with the gain table."""
    t = fixed.export_tables(model)
    meta = {"architecture": ARCHITECTURE, "N": int(model.N), "M": int(model.M), "qualities": model.qualities,
            "N_analysis": model.N_analysis}
    log_gains = model.log_gain.detach().cpu().numpy().astype(np.float32)
    return tables_mod.build(meta, t.z, t.y, t.scale_thresholds, t.hyper, log_gains)


class _GainEncoder(nn.Module):
    def __init__(self, model: VariableRateFaceCodec):
        super().__init__()
        self.g_a = fixed._plain(model.g_a)
        self.h_a = fixed._plain(model.h_a)

    def forward(self, x, gain):
        y = self.g_a(x) * gain[:, :, None, None]
        return y, self.h_a(y)


def deployed_encoder(model: VariableRateFaceCodec, dtype: str = "float32") -> nn.Module:
    """The torch module the ONNX encoder is exported from (plain-op GDNs, weights rounded to ``dtype``)."""
    return fixed._round_to(_GainEncoder(model).eval(), dtype)


def export_onnx(model: VariableRateFaceCodec, path: Path, dtype: str = "float32") -> None:
    enc = deployed_encoder(model, dtype)
    x, gain = torch.rand(1, 3, 128, 192), torch.ones(1, model.M)
    torch.onnx.export(enc, (x, gain), str(path), input_names=["image", "gain"], output_names=["y", "z"],
                      opset_version=fixed.ONNX_OPSET, dynamic_axes={"image": {2: "height", 3: "width"},
                                                                    "y": {2: "yh", 3: "yw"}, "z": {2: "zh", 3: "zw"}},
                      dynamo=False)
    if dtype == "float16":
        fixed._initializers_to_float16(path)


def decoder_state(model: VariableRateFaceCodec, dtype: str = "float32") -> dict[str, torch.Tensor]:
    """``g_s`` in ``dtype``; the inverse gains in float32 (K × M numbers)."""
    state = fixed.decoder_state(model, dtype)
    state["log_inv_gain"] = model.log_inv_gain.detach().float().contiguous()
    return state


def export(model: VariableRateFaceCodec, name: str, out_root: Path | None = None, description: str = "",
           provenance: dict | None = None, weights: str = "float16", default_quality: float | None = None,
           purpose: str | None = None) -> Path:
    """Write the registry model ``name`` (under ``out_root``, default the package's registry); returns its folder.
    ``default_quality``: what an edge codes at unless told (default the middle of the range); ``purpose``: the
    model table's line for it."""
    if weights not in fixed.WEIGHT_DTYPES:
        raise ValueError(f"weights must be one of {', '.join(fixed.WEIGHT_DTYPES)}, not {weights!r}")
    top = model.qualities - 1
    if default_quality is None:
        default_quality = top / 2
    if not 0 <= default_quality <= top:
        raise ValueError(f"default quality must lie in [0, {top}], got {default_quality:g}")
    model = model.cpu().eval()
    out = (out_root or registry.MODELS_DIR) / name
    out.mkdir(parents=True, exist_ok=True)
    tables = export_tables(model)
    tables_mod.save(tables, out / "tables.npz")
    export_onnx(model, out / "encoder.onnx", weights)
    save_file(decoder_state(model, weights), str(out / "decoder.safetensors"))
    manifest = {
        "name": name, "model_id": tables.model_id, "architecture": ARCHITECTURE, "N": int(model.N),
        "M": int(model.M), "qualities": model.qualities, "N_analysis": model.N_analysis, "weights": weights,
        "description": description,
        "lambda_of_quality": {str(q): lmbda(q) for q in range(model.qualities)},
        "default_quality": float(default_quality), **({"purpose": purpose} if purpose else {}),
        "training": provenance or {},
        "files": {f: sha256_file(out / f) for f in fixed.FILES},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out

