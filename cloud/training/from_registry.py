"""A trainable :class:`~facelink.cloud.serving.codec_model.FaceCodec` rebuilt from a registry rate point, so a new
ladder can
be fine-tuned from the committed models (``init_from: registry:NAME`` in a training configuration) when the
training run that made them is not on this machine.

A rate point stores what edge and cloud run, not the training state, so three parts are recovered rather than read:

- ``g_a``'s GDNs hold their effective β and γ in the ONNX; the trainable parameters are set so that the
  reparametrization gives them back (exactly, up to float rounding).
- ``h_s`` is stored as integers with a power-of-two scale per layer; its float weights are those integers
  de-scaled (as :func:`facelink.cloud.training.export.reference_model` does), within half an integer step of the
  original.
- The hyper-latent's factorized density is stored only as quantized CDFs. Its parameters are refitted to them by
  minimising the cross-entropy between the stored probabilities and the density's (a few hundred Adam steps), and
  its quantiles are set to the stored medians and supports.

``g_s`` and ``g_a``'s convolutions and ``h_a`` come back as stored (float16 rate points: float16 values).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from compressai.layers import GDN

from facelink.cloud.serving.codec_model import FaceCodec, build, load_synthesis
from facelink.shared import registry

PREFIX = "registry:"
PRECISION = 16  # CompressAI's entropy-coder CDF precision (bits)


def is_registry_ref(init_from: str | None) -> bool:
    return bool(init_from) and init_from.startswith(PREFIX)


def encoder_initializers(bundle: registry.ModelBundle) -> dict[str, torch.Tensor]:
    """The ONNX encoder's weights by their torch names (float16-stored ones cast back to float32)."""
    import onnx
    from onnx import numpy_helper

    from facelink.cloud.training.export import F16_SUFFIX

    return {
        i.name.removesuffix(F16_SUFFIX): torch.from_numpy(numpy_helper.to_array(i).astype(np.float32))
        for i in onnx.load(str(bundle.encoder_onnx)).graph.initializer
    }


def require(inits: dict, names, source: str) -> None:
    missing = [k for k in names if k not in inits]
    if missing:  # the ONNX exporter merges initializers with equal values (untrained GDNs)
        raise ValueError(
            f"{source}: no initializers named {', '.join(missing)}; the exporter merged equal "
            "tensors, so the torch model cannot be reassembled"
        )


def _load_analysis(model: FaceCodec, inits: dict[str, torch.Tensor], source: str) -> None:
    with torch.no_grad():
        for name in ("g_a", "h_a"):
            for idx, mod in enumerate(getattr(model, name)):
                key = f"{name}.{idx}"
                if isinstance(mod, GDN):
                    need = (f"{key}.beta", f"{key}.gamma")
                elif isinstance(mod, nn.Conv2d):
                    need = (f"{key}.weight", f"{key}.bias")
                else:
                    continue
                require(inits, need, source)
                if isinstance(mod, GDN):
                    c = mod.beta.shape[0]
                    mod.beta.copy_(mod.beta_reparam.init(inits[need[0]]))
                    mod.gamma.copy_(mod.gamma_reparam.init(inits[need[1]].reshape(c, c)))
                else:
                    mod.weight.copy_(inits[need[0]])
                    mod.bias.copy_(inits[need[1]])


def load_hyper_synthesis(model: FaceCodec, tables) -> None:
    """``h_s``'s float weights from the integer tables, de-scaled."""
    convs = [mod for mod in model.h_s if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d))]
    frac = tables.hyper.frac_bits
    with torch.no_grad():
        for mod, layer in zip(convs, tables.hyper.layers, strict=True):
            mod.weight.copy_(torch.from_numpy(layer.weight / 2.0**layer.shift))
            mod.bias.copy_(torch.from_numpy(layer.bias / 2.0 ** (frac + layer.shift)))


def stored_z_pmf(tables) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per channel of the hyper-latent: probabilities of the stored support (C × L, zero past each channel's
    length), the support's lowest symbol (−offset) and its length."""
    z = tables.z
    lengths = z.cdf_lengths.astype(np.int64) - 2  # a CDF holds 0, the support's masses, and the tail
    pmf = np.zeros((len(lengths), int(lengths.max())), dtype=np.float64)
    for c, n in enumerate(lengths):
        pmf[c, :n] = np.diff(z.cdfs[c, : n + 1].astype(np.float64)) / 2.0**PRECISION
    return pmf, -z.offsets.astype(np.int64), lengths


def fit_hyper_density(model: FaceCodec, tables, steps: int = 400, lr: float = 0.02) -> float:
    """Refit the entropy bottleneck's density to the stored CDFs; returns the final cross-entropy minus the
    stored entropy, in bits per hyper-latent element summed over channels (0 = a perfect fit)."""
    eb = model.entropy_bottleneck
    pmf, minima, lengths = stored_z_pmf(tables)
    medians = torch.from_numpy(tables.hyper.z_medians / 2.0**tables.hyper.frac_bits).float()
    maxima = torch.from_numpy(lengths - 1 - minima).float()
    lo = torch.from_numpy(minima).float()
    with torch.no_grad():
        eb.quantiles[:, 0, 0] = medians - lo + 1e-3  # update() takes ceil(median − q0): the stored minima
        eb.quantiles[:, 0, 1] = medians
        eb.quantiles[:, 0, 2] = medians + maxima - 1e-3
    target = torch.from_numpy(pmf).float()
    samples = (medians - lo)[:, None, None] + torch.arange(pmf.shape[1], dtype=torch.float32)[None, None, :]
    params = list(eb.matrices) + list(eb.biases) + list(eb.factors)
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        lik, _, _ = eb._likelihood(samples)
        loss = -(target * torch.log2(lik[:, 0, :].clamp_min(1e-9))).sum()
        loss.backward()
        opt.step()
    entropy = -(pmf[pmf > 0] * np.log2(pmf[pmf > 0])).sum()
    with torch.no_grad():
        lik, _, _ = eb._likelihood(samples)
        cross = -(target * torch.log2(lik[:, 0, :].clamp_min(1e-9))).sum().item()
    return float(cross - entropy)


def trainable_model(name_or_path: str) -> tuple[FaceCodec, dict]:
    """The rate point as a trainable model, and a report of what was recovered (``z_fit_bits``: see
    :func:`fit_hyper_density`)."""
    bundle = registry.load(name_or_path)
    m = bundle.manifest
    model = build(m["architecture"], m["N"], m["M"])
    _load_analysis(model, encoder_initializers(bundle), str(bundle.encoder_onnx))
    load_synthesis(model, bundle.weights)
    load_hyper_synthesis(model, bundle.tables)
    gap = fit_hyper_density(model, bundle.tables)
    model.update(force=True)
    return model, {"name": m["name"], "model_id": m["model_id"], "z_fit_bits": gap}


def init_state(init_from: str) -> dict:
    """``init_from`` (a run's ``model.pt`` or ``registry:NAME``) as the state dict training starts from."""
    if is_registry_ref(init_from):
        model, report = trainable_model(init_from[len(PREFIX) :])
        print(
            f"rebuilt {report['name']} (model id {report['model_id']}) from the registry; hyper-latent density "
            f"refitted to its tables within {report['z_fit_bits']:.3f} bits per position"
        )
        return model.state_dict()
    return torch.load(init_from, map_location="cpu", weights_only=False)["model"]
