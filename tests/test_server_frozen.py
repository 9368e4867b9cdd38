"""The server's frozen TorchScript networks: the synthesis g_s (channels_last, no adapters) and the recognizer run as
frozen graphs equal to the eager modules up to float rounding, at any batch and latent size; whatever does not
trace faithfully stays eager."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from facelink.benchmarks.serve_load import crops
from facelink.cloud.serving.decoder import CloudDecoder
from facelink.cloud.serving.frozen import frozen_copy
from facelink.shared.registry import DEFAULT_MODEL


def test_synthesis_runs_a_frozen_g_s_equal_to_eager():
    frames, _ = crops(9)
    server = CloudDecoder([DEFAULT_MODEL], device="cpu", channels_last=True)  # the server's decoder
    plain = CloudDecoder([DEFAULT_MODEL], device="cpu")  # evaluations': eager, default layout
    model_id = next(iter(server.bundles))
    fast, eager = server.synthesis(model_id), plain.synthesis(model_id)
    assert fast.frozen and isinstance(fast.run_g_s, torch.jit.ScriptModule)
    assert not eager.frozen and eager.run_g_s is eager.g_s
    latents = [server.latents(f) for f in frames]
    ys = [y for _, _, y in latents]
    qualities = [frame.quality for frame, _, _ in latents]
    want = [eager(y, None, q)[0] for y, q in zip(ys, qualities)]
    for n in (1, 3, 8):  # batches of any size; each image within one grey level of the eager one's
        for (got, weights), w in zip(fast.batch(ys[:n], qualities[:n]), want):
            assert weights is None and got.shape == w.shape
            assert np.abs(got.astype(int) - w).max() <= 1
    y = torch.from_numpy(np.stack(ys[:2]))
    with torch.inference_mode():  # the float outputs, before rounding to pixels
        a = fast.run_g_s(y.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(a, eager.g_s(y), rtol=1e-4, atol=1e-5)
        small = torch.randn(1, y.shape[1], 5, 6)  # a latent size never traced
        torch.testing.assert_close(fast.run_g_s(small.contiguous(memory_format=torch.channels_last)),
                                   eager.g_s(small), rtol=1e-4, atol=1e-5)


class _ShapeDependent(nn.Module):
    def forward(self, x):
        return x * 2 if x.shape[0] > 1 else x  # a trace keeps the branch its example took


def test_a_module_that_does_not_trace_faithfully_stays_eager(caplog):
    module = _ShapeDependent()
    graph, frozen = frozen_copy(module, [torch.ones(2, 3), torch.ones(1, 3)], "shape-dependent")
    assert not frozen and graph is module and "shape-dependent stays eager" in caplog.text
    graph, frozen = frozen_copy(nn.Linear(3, 2), [torch.ones(2, 3), torch.ones(1, 3)], "linear")
    assert frozen and graph(torch.ones(5, 3)).shape == (5, 2)
