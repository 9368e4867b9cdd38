"""A tiny variable-rate model for tests: trained a few steps on random patches and exported as a registry folder
(tests of core v2's codec and of the edge's --quality / --max-bytes share it)."""
import torch

from facelink.cloud.serving.variable_rate import VariableRateFaceCodec, forward_vr, lmbda, per_sample_terms
from facelink.cloud.training import export_v2


def tiny_vr_model(root, name: str = "tiny-vr", **export_options):
    """A 16/24 model with an 8-channel analysis transform after three steps (seeded); returns (model in eval mode,
    its exported registry folder under ``root``)."""
    torch.manual_seed(3)
    model = VariableRateFaceCodec(16, 24, N_analysis=8).train()
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.endswith(".quantiles")], lr=1e-3)
    for _ in range(3):
        x = torch.rand(4, 3, 128, 128)
        q = torch.tensor([0.0, 2.5, 5.0, 7.0])
        bpp, mse = per_sample_terms(forward_vr(model, x, q), x)
        loss = (bpp + lmbda(q) * 255**2 * mse).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    folder = export_v2.export(model, name, root, weights="float32", **export_options)
    return model.eval(), folder
