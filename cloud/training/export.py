"""Export a trained :class:`~facelink.cloud.serving.codec_model.FaceCodec` into the artifacts edge and cloud load:

- ``encoder.onnx``: image (1, 3, H, W) in [0, 1], H and W multiples of 64 → latents ``y`` and ``z`` (the edge);
- ``tables.npz``: entropy-coding tables and the integer hyper-synthesis (both sides; its hash is the model id);
- ``decoder.safetensors``: the synthesis transform ``g_s`` (the cloud's only float part);
- ``manifest.json``: name, model id, architecture, training provenance, weight precision, sha256 of every file.

Nothing is stored twice: ``g_a``/``h_a`` live only in the ONNX, ``h_s`` and the entropy models only in the tables.
With ``--weights float16`` the encoder's and decoder's weights are rounded to float16 and stored so (half the
bytes); the rounded encoder *is* the deployed one (ONNX casts them back to float32 once, when it loads), so the
edge, the tests and the benchmarks all see the same numbers. The bitstream's entropy parameters are unaffected
(integer tables). :func:`reference_model` reassembles a torch ``FaceCodec`` from these files for torch baselines.

``facelink export --checkpoint RUN/model.pt --name NAME`` writes them under the model registry;
``--ladder NAME --point qK`` names the rate point ``face-<family>-qK`` and writes what its ladder says of it into the
manifest (family, label, quality index, the models it is an ablation of or was tuned from:
:func:`facelink.cloud.training.ladder.manifest_fields`).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from compressai.layers import GDN
from safetensors.torch import save_file

from facelink.cloud.serving.codec_model import FaceCodec, build, load_synthesis
from facelink.shared import registry
from facelink.shared import tables as tables_mod
from facelink.shared.detection import sha256_file
from facelink.shared.hyper_int import EXACT_LIMIT, IntHyperSynthesis, IntLayer

FRAC_BITS = 10  # fixed-point fraction bits of hyper-synthesis activations
WEIGHT_BITS = 14  # |integer weight| ≤ 2**WEIGHT_BITS
ONNX_OPSET = 18
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16}  # --weights: stored precision
F16_SUFFIX = "__f16"  # an ONNX initializer stored as float16, cast back to its own name's float32 at load
FILES = ("encoder.onnx", "tables.npz", "decoder.safetensors")


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


def _round_to(module: nn.Module, dtype: str) -> nn.Module:
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            t.copy_(t.to(WEIGHT_DTYPES[dtype]).float())
    return module


def deployed_encoder(model: FaceCodec, dtype: str = "float32") -> nn.Module:
    """The torch module the ONNX encoder is exported from: plain-op GDNs, weights rounded to ``dtype``."""
    return _round_to(_Encoder(model).eval(), dtype)


def _initializers_to_float16(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(path))
    casts, inits = [], []
    for init in m.graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            inits.append(init)
            continue
        a = numpy_helper.to_array(init)
        inits.append(numpy_helper.from_array(a.astype(np.float16), init.name + F16_SUFFIX))
        casts.append(helper.make_node("Cast", [init.name + F16_SUFFIX], [init.name], to=TensorProto.FLOAT,
                                      name="cast_" + init.name))
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    nodes = casts + list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def export_onnx(model: FaceCodec, path: Path, dtype: str = "float32") -> None:
    enc = deployed_encoder(model, dtype)
    x = torch.rand(1, 3, 128, 192)
    torch.onnx.export(enc, (x,), str(path), input_names=["image"], output_names=["y", "z"], opset_version=ONNX_OPSET,
                      dynamic_axes={"image": {2: "height", 3: "width"}, "y": {2: "yh", 3: "yw"},
                                    "z": {2: "zh", 3: "zw"}}, dynamo=False)
    if dtype == "float16":
        _initializers_to_float16(path)


def decoder_state(model: FaceCodec, dtype: str = "float32") -> dict[str, torch.Tensor]:
    return {f"g_s.{k}": v.detach().to(WEIGHT_DTYPES[dtype]).contiguous()
            for k, v in model.g_s.state_dict().items()}


def load_checkpoint(path: str | Path) -> tuple[FaceCodec, dict]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    cfg = state["config"]
    model = build(cfg["architecture"], cfg["N"], cfg["M"])
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


def reference_model(bundle: registry.ModelBundle) -> FaceCodec:
    """A torch ``FaceCodec`` that computes what a registry rate point's artifacts compute: ``g_a``/``h_a`` from the
    ONNX initializers (plain-op GDNs), ``h_s`` from the integer tables (de-scaled), ``g_s`` from the decoder
    weights, the entropy models' CDFs from the tables. For torch ``compress()`` baselines and checks."""
    from facelink.cloud.training.from_registry import encoder_initializers, load_hyper_synthesis, require

    m = bundle.manifest
    model = build(m["architecture"], m["N"], m["M"])
    model.g_a, model.h_a = _plain(model.g_a), _plain(model.h_a)
    inits = encoder_initializers(bundle)
    for name in ("g_a", "h_a"):
        sub = getattr(model, name)
        require(inits, [f"{name}.{k}" for k in sub.state_dict()], str(bundle.encoder_onnx))
        sub.load_state_dict({k: inits[f"{name}.{k}"] for k in sub.state_dict()})
    load_synthesis(model, bundle.weights)
    t = bundle.tables
    load_hyper_synthesis(model, t)
    eb, gc = model.entropy_bottleneck, model.gaussian_conditional
    with torch.no_grad():
        eb.quantiles[:, 0, 1] = torch.from_numpy(t.hyper.z_medians / 2.0**t.hyper.frac_bits)
    model.update(force=True)  # scale table and buffer shapes; the CDFs are then replaced by the tables' own
    for module, et in ((eb, t.z), (gc, t.y)):
        module._quantized_cdf = torch.from_numpy(et.cdfs.astype(np.int32))
        module._cdf_length = torch.from_numpy(et.cdf_lengths.astype(np.int32))
        module._offset = torch.from_numpy(et.offsets.astype(np.int32))
    return model.eval()


def export(checkpoint: str | Path, name: str, out_root: Path | None = None, description: str = "",
           command: str = "", weights: str = "float32", fields: dict | None = None) -> Path:
    """Write rate point ``name``'s files and manifest; ``fields`` (e.g. a ladder's
    :func:`~facelink.cloud.training.ladder.manifest_fields`) are added to the manifest after its description."""
    if weights not in WEIGHT_DTYPES:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_DTYPES)}, not {weights!r}")
    model, state = load_checkpoint(checkpoint)
    out = (out_root or registry.MODELS_DIR) / name
    out.mkdir(parents=True, exist_ok=True)
    tables = export_tables(model)
    tables_mod.save(tables, out / "tables.npz")
    export_onnx(model, out / "encoder.onnx", weights)
    save_file(decoder_state(model, weights), str(out / "decoder.safetensors"))
    (out / "codec.safetensors").unlink(missing_ok=True)  # the format before decoder-only weights
    cfg = state["config"]
    manifest = {
        "name": name,
        "model_id": tables.model_id,
        "architecture": cfg["architecture"],
        "N": cfg["N"], "M": cfg["M"],
        "weights": weights,
        "description": description,
        **(fields or {}),
        "training": {"lambda": cfg["lmbda"], "alpha": cfg.get("alpha", 0.0), "steps": state.get("step"),
                     "datasets": cfg["datasets"], "config": cfg, "command": command},
        "files": {f: sha256_file(out / f) for f in FILES},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="facelink export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a training run's model.pt")
    ap.add_argument("--ladder", metavar="NAME", help="the research ladder the run trained (with --point): names the "
                    "rate point face-<family>-<point> and records family, label and relations in the manifest")
    ap.add_argument("--point", metavar="qK", help="the ladder's rate point the run trained")
    ap.add_argument("--name", help="rate point name in the model registry (default with --ladder: its model name)")
    ap.add_argument("--out-root", type=Path, help="registry folder (default: the package's models/)")
    ap.add_argument("--description", help="what the model is (default with --ladder: the ladder's description)")
    ap.add_argument("--command", default="", help="the training command, recorded in the manifest")
    ap.add_argument("--weights", choices=list(WEIGHT_DTYPES), default="float32",
                    help="precision the encoder and decoder weights are rounded to and stored in")
    args = ap.parse_args(argv)
    if bool(args.ladder) != bool(args.point):
        ap.error("--ladder and --point go together")
    fields, name, description = None, args.name, args.description
    if args.ladder:
        from facelink.cloud.training import ladder
        from facelink.shared.config import ConfigError

        try:
            fields = ladder.manifest_fields(args.ladder, args.point)
            name = name or ladder.load(args.ladder).model_name(args.point)
            description = description or ladder.export_description(args.ladder, args.point)
        except ConfigError as e:
            print(f"facelink export: {e}", file=sys.stderr)
            return 2
    if not name:
        ap.error("give --name, or --ladder and --point")
    out = export(args.checkpoint, name, args.out_root, description or "", args.command, args.weights, fields)
    print(json.dumps(json.loads((out / "manifest.json").read_text()), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
