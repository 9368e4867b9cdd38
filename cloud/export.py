"""Export a trained :class:`~facelink.cloud.codec_model.FaceCodec` into the artifacts edge and cloud load:

- ``encoder.onnx``: image (1, 3, H, W) in [0, 1], H and W multiples of 64 → latents ``y`` and ``z`` (the edge);
- ``tables.npz``: entropy-coding tables and the integer hyper-synthesis (both sides; its hash is the model id);
- ``codec.safetensors``: the torch weights (the cloud's synthesis transform, and torch ``compress()``);
- ``manifest.json``: name, model id, architecture, training provenance, sha256 of every file.

``facelink export --checkpoint RUN/model.pt --name NAME`` writes them under the model registry.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from compressai.layers import GDN
from safetensors.torch import save_file

from facelink.cloud.codec_model import FaceCodec, build
from facelink.shared import registry, tables as tables_mod
from facelink.shared.detection import sha256_file
from facelink.shared.hyper_int import EXACT_LIMIT, IntHyperSynthesis, IntLayer

FRAC_BITS = 10  # fixed-point fraction bits of hyper-synthesis activations
WEIGHT_BITS = 14  # |integer weight| ≤ 2**WEIGHT_BITS
ONNX_OPSET = 18


def integerize_hyper_synthesis(h_s: nn.Sequential, z_medians: torch.Tensor) -> IntHyperSynthesis:
    mods = list(h_s)
    layers = []
    for i, m in enumerate(mods):
        if isinstance(m, nn.ReLU):
            continue
        if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            raise TypeError(f"hyper-synthesis layer {i} is {type(m).__name__}; only Conv2d, ConvTranspose2d, ReLU")
        relu = i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU)
        w = m.weight.detach().double().cpu().numpy()
        b = m.bias.detach().double().cpu().numpy()
        shift = WEIGHT_BITS - math.ceil(math.log2(np.abs(w).max()))
        w_int = np.round(w * 2.0**shift).astype(np.int64)
        b_int = np.round(b * 2.0 ** (FRAC_BITS + shift)).astype(np.int64)
        layer = IntLayer("deconv" if isinstance(m, nn.ConvTranspose2d) else "conv", w_int, b_int, shift,
                         m.stride[0], m.padding[0], m.output_padding[0] if isinstance(m, nn.ConvTranspose2d) else 0,
                         relu)
        bound = layer.worst_case_accumulator()
        if bound >= EXACT_LIMIT:
            raise ValueError(f"hyper-synthesis layer {i}: worst-case accumulator {bound} ≥ 2**53, not exact")
        layers.append(layer)
    med = np.round(z_medians.detach().double().cpu().numpy() * 2.0**FRAC_BITS).astype(np.int64)
    return IntHyperSynthesis(tuple(layers), FRAC_BITS, med)


def export_tables(model: FaceCodec) -> tables_mod.ModelTables:
    model.update(force=True)
    eb, gc = model.entropy_bottleneck, model.gaussian_conditional
    z = tables_mod.EntropyTables(eb._quantized_cdf.cpu().numpy(), eb._cdf_length.cpu().numpy(),
                                 eb._offset.cpu().numpy())
    y = tables_mod.EntropyTables(gc._quantized_cdf.cpu().numpy(), gc._cdf_length.cpu().numpy(),
                                 gc._offset.cpu().numpy())
    scale_table = gc.scale_table.cpu().numpy().astype(np.float32)
    thresholds = np.floor(scale_table[:-1].astype(np.float64) * 2.0**FRAC_BITS).astype(np.int64)
    hyper = integerize_hyper_synthesis(model.h_s, eb.quantiles[:, 0, 1])
    meta = {"architecture": "facelink-msh-relu-v1", "N": int(model.N), "M": int(model.M)}
    return tables_mod.build(meta, z, y, thresholds, hyper)


class _PlainGDN(nn.Module):
    """GDN with its reparametrized β and γ evaluated once: plain ops that ONNX exports."""

    def __init__(self, gdn: GDN):
        super().__init__()
        beta = gdn.beta_reparam(gdn.beta).detach()
        gamma = gdn.gamma_reparam(gdn.gamma).detach()
        c = gamma.shape[0]
        self.register_buffer("beta", beta)
        self.register_buffer("gamma", gamma.reshape(c, c, 1, 1))

    def forward(self, x):
        return x * torch.rsqrt(nn.functional.conv2d(x * x, self.gamma, self.beta))


def _plain(seq: nn.Sequential) -> nn.Sequential:
    return nn.Sequential(*[_PlainGDN(m) if isinstance(m, GDN) and not m.inverse else m for m in seq])


class _Encoder(nn.Module):
    def __init__(self, model: FaceCodec):
        super().__init__()
        self.g_a = _plain(model.g_a)
        self.h_a = _plain(model.h_a)

    def forward(self, x):
        y = self.g_a(x)
        return y, self.h_a(y)


def export_onnx(model: FaceCodec, path: Path) -> None:
    enc = _Encoder(model).eval()
    x = torch.rand(1, 3, 128, 192)
    torch.onnx.export(enc, (x,), str(path), input_names=["image"], output_names=["y", "z"], opset_version=ONNX_OPSET,
                      dynamic_axes={"image": {2: "height", 3: "width"}, "y": {2: "yh", 3: "yw"},
                                    "z": {2: "zh", 3: "zw"}}, dynamo=False)


def load_checkpoint(path: str | Path) -> tuple[FaceCodec, dict]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    cfg = state["config"]
    model = build(cfg["architecture"], cfg["N"], cfg["M"])
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


def load_codec_from_bundle(bundle: registry.ModelBundle) -> FaceCodec:
    """The full torch model of a registry rate point (for torch ``compress()`` and checks against the ONNX)."""
    from safetensors.torch import load_file

    m = bundle.manifest
    model = build(m["architecture"], m["N"], m["M"])
    model.load_state_dict(load_file(str(bundle.weights)))
    return model.eval()


def export(checkpoint: str | Path, name: str, out_root: Path | None = None, description: str = "",
           command: str = "") -> Path:
    model, state = load_checkpoint(checkpoint)
    out = (out_root or registry.MODELS_DIR) / name
    out.mkdir(parents=True, exist_ok=True)
    tables = export_tables(model)
    tables_mod.save(tables, out / "tables.npz")
    export_onnx(model, out / "encoder.onnx")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "codec.safetensors"))
    cfg = state["config"]
    manifest = {
        "name": name,
        "model_id": tables.model_id,
        "architecture": cfg["architecture"],
        "N": cfg["N"], "M": cfg["M"],
        "description": description,
        "training": {"lambda": cfg["lmbda"], "steps": state.get("step"), "datasets": cfg["datasets"],
                     "config": cfg, "command": command},
        "files": {f: sha256_file(out / f) for f in ("encoder.onnx", "tables.npz", "codec.safetensors")},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facelink export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a training run's model.pt")
    ap.add_argument("--name", required=True, help="rate point name in the model registry")
    ap.add_argument("--out-root", type=Path, help="registry folder (default: the package's models/)")
    ap.add_argument("--description", default="")
    ap.add_argument("--command", default="", help="the training command, recorded in the manifest")
    args = ap.parse_args(argv)
    out = export(args.checkpoint, args.name, args.out_root, args.description, args.command)
    print(json.dumps(json.loads((out / "manifest.json").read_text()), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
