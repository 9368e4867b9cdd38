"""Identity-preservation (IPR) loss: how far a reconstruction's face embedding moves from the source's.

Both the source patch and its reconstruction are warped onto the recognizer's template with a differentiable
``affine_grid``/``grid_sample`` (bilinear, border replication: the same sampling as
:func:`facelink.shared.alignment.align`, which uses ``cv2.warpAffine`` with ``INTER_LINEAR`` and
``BORDER_REPLICATE``), embedded by the frozen MobileFaceNet, and compared:

    D_identity = (1 / N) · Σ_i w_i · (1 − cos(e(src_i), e(rec_i)))

``w_i`` is 0 for a patch whose face is not fully inside (see the landmark-aware sampler in
:mod:`facelink.cloud.training.train`), 1 otherwise. The recognizer is in eval mode with frozen weights; gradients
flow to
the reconstruction only (the source embeddings are computed without a graph).

The per-sample 2×3 matrices are in pixel coordinates, OpenCV's convention (pixel centres at integer coordinates),
mapping patch pixels to template pixels, exactly what ``similarity_transform(landmarks, template.points)`` returns.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facelink.shared.alignment import MOBILEFACENET_96x112, Template, similarity_transform

# Recognizers the identity loss can differentiate through (torch modules), with the template each expects.
DIFFERENTIABLE_RECOGNIZERS = {"mobilefacenet": MOBILEFACENET_96x112}


def _pixel_to_normalized(width: int, height: int, dtype=torch.float64) -> torch.Tensor:
    """3×3 matrix: pixel coordinates (centres at integers) → grid_sample's [-1, 1] coordinates, align_corners=False."""
    return torch.tensor(
        [[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, 2.0 / height, 1.0 / height - 1.0], [0.0, 0.0, 1.0]], dtype=dtype
    )


def pixel_matrix_to_theta(
    m: torch.Tensor | np.ndarray, in_hw: tuple[int, int], out_hw: tuple[int, int]
) -> torch.Tensor:
    """Pixel-space 2×3 matrices (N×2×3, input pixel → output pixel, as for ``cv2.warpAffine``) → the N×2×3
    ``theta`` that ``F.affine_grid(..., align_corners=False)`` wants (output normalized → input normalized)."""
    m = torch.as_tensor(m, dtype=torch.float64)
    if m.ndim == 2:
        m = m[None]
    if m.shape[1:] != (2, 3):
        raise ValueError(f"expected N×2×3 matrices, got {tuple(m.shape)}")
    full = torch.cat([m, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(len(m), 1, 3)], dim=1)
    inv = torch.linalg.inv(full)  # output pixel → input pixel
    n_in = _pixel_to_normalized(in_hw[1], in_hw[0])
    n_out_inv = torch.linalg.inv(_pixel_to_normalized(out_hw[1], out_hw[0]))
    return (n_in @ inv @ n_out_inv)[:, :2, :]


def warp(images: torch.Tensor, m: torch.Tensor | np.ndarray, template: Template) -> torch.Tensor:
    """Differentiable :func:`~facelink.shared.alignment.align`: N×C×H×W images, N×2×3 pixel matrices → N×C×h×w
    crops of the template's size (bilinear, border replication)."""
    n, c, h, w = images.shape
    out_hw = (template.height, template.width)
    theta = pixel_matrix_to_theta(m, (h, w), out_hw).to(device=images.device, dtype=images.dtype)
    if len(theta) != n:
        raise ValueError(f"{n} images but {len(theta)} matrices")
    grid = F.affine_grid(theta, [n, c, *out_hw], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def template_matrices(landmarks: np.ndarray, template: Template = MOBILEFACENET_96x112) -> np.ndarray:
    """N×5×2 landmarks (patch pixels) → N×2×3 matrices mapping patch pixels onto ``template``."""
    return np.stack([similarity_transform(lm, template.points) for lm in np.asarray(landmarks, dtype=np.float64)])


def face_inside(
    m: np.ndarray, height: int, width: int, template: Template = MOBILEFACENET_96x112, tolerance: float = 1.0
) -> bool:
    """Whether the region the recognizer sees (the template rectangle mapped back into the patch) lies inside
    the ``height``×``width`` patch, to within ``tolerance`` pixels."""
    full = np.vstack([m, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(full)
    corners = np.array(
        [
            [-0.5, -0.5],
            [template.width - 0.5, -0.5],
            [-0.5, template.height - 0.5],
            [template.width - 0.5, template.height - 0.5],
        ]
    )
    back = corners @ inv[:2, :2].T + inv[:2, 2]
    lo, hi = -0.5 - tolerance, np.array([width, height]) - 0.5 + tolerance
    return bool((back >= lo).all() and (back <= hi).all())


class IdentityLoss(nn.Module):
    """``loss(source, reconstruction, matrices, weights=None)`` → (D_identity, per-sample 1 − cos).

    ``source``/``reconstruction``: N×3×H×W RGB in [0, 1]; ``matrices``: N×2×3 pixel matrices patch → template;
    ``weights``: N values (0 drops a sample; default all 1). Only samples with a non-zero weight are embedded.
    ``source_keys``: N keys (None: none) under which a source patch's embedding is remembered
    (:meth:`source_embeddings`).
    The per-sample tensor holds 1 − cos for every sample (NaN where the weight is 0), detached, for logging.
    """

    def __init__(self, recognizer: str = "mobilefacenet", device: str | torch.device | None = None):
        super().__init__()
        if recognizer not in DIFFERENTIABLE_RECOGNIZERS:
            raise ValueError(
                f"identity loss: recognizer {recognizer!r} is not differentiable here; "
                f"known: {', '.join(DIFFERENTIABLE_RECOGNIZERS)}"
            )
        from facelink.cloud.serving.recognizers import load_mobilefacenet

        self.template = DIFFERENTIABLE_RECOGNIZERS[recognizer]
        self.recognizer = load_mobilefacenet(device or "cpu", requires_grad=False)
        # embeddings of source patches that recur (a sampler's aligned crops, by its keys): the frozen recognizer
        # gives them the same embedding every time, so each is computed once
        self.source_cache: dict = {}

    def source_embeddings(self, source: torch.Tensor, matrices: torch.Tensor, keys=None) -> torch.Tensor:
        """Embeddings of source patches (no gradient), taken from :attr:`source_cache` for those whose key (in
        ``keys``, one per patch; None: not cacheable) it holds; the others computed in one batch and remembered."""
        if keys is None:
            with torch.no_grad():
                return self.recognizer.embed_rgb01(warp(source, matrices, self.template))
        if len(keys) != len(source):
            raise ValueError(f"{len(source)} source patches but {len(keys)} keys")
        todo = [j for j, k in enumerate(keys) if k is None or k not in self.source_cache]
        rows: list = [None] * len(keys)
        if todo:
            with torch.no_grad():
                fresh = self.recognizer.embed_rgb01(warp(source[todo], matrices[todo], self.template))
            for j, e in zip(todo, fresh):
                rows[j] = e
                if keys[j] is not None:
                    self.source_cache[keys[j]] = e
        for j, k in enumerate(keys):
            if rows[j] is None:
                rows[j] = self.source_cache[k]
        return torch.stack(rows)

    def train(self, mode: bool = True):
        """The recognizer stays in eval mode (batch-norm statistics frozen) whatever the caller asks."""
        super().train(mode)
        self.recognizer.eval()
        return self

    def forward(
        self, source: torch.Tensor, reconstruction: torch.Tensor, matrices, weights=None, source_keys=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(source)
        if reconstruction.shape != source.shape:
            raise ValueError(f"source {tuple(source.shape)} and reconstruction {tuple(reconstruction.shape)} differ")
        w = (
            torch.ones(n, device=source.device)
            if weights is None
            else torch.as_tensor(weights, dtype=source.dtype, device=source.device)
        )
        per_sample = torch.full((n,), float("nan"), device=source.device)
        keep = torch.nonzero(w > 0).flatten()
        if len(keep) == 0:
            return reconstruction.sum() * 0.0, per_sample  # keeps the graph; contributes nothing
        m = torch.as_tensor(np.asarray(matrices), dtype=torch.float64)[keep.cpu()]
        keys = None if source_keys is None else [source_keys[j] for j in keep.tolist()]
        e_src = self.source_embeddings(source[keep], m, keys)
        rec = warp(reconstruction[keep].clamp(0.0, 1.0), m, self.template)
        e_rec = self.recognizer.embed_rgb01(rec)
        d = 1.0 - (e_src * e_rec).sum(dim=1)
        per_sample[keep] = d.detach().to(per_sample.dtype)
        return (w[keep] * d).sum() / n, per_sample
