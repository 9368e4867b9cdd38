"""Frozen TorchScript copies of inference-only CPU networks: one traced graph with its weights folded in as constants
and oneDNN kernels chosen ahead of time, called as one op instead of layer by layer from Python.

:func:`frozen_copy` traces a module on one example, freezes it (``torch.jit.freeze``), optimises it for inference
(``torch.jit.optimize_for_inference``) and checks the result against the eager module on every example given
(batch sizes, spatial sizes) before returning it; on any failure, or outputs that differ beyond float rounding, it
returns the eager module itself. Traces hold no Python control flow, so only networks whose operations do not depend
on their input's shape may be traced: the checks on other shapes are what confirm it.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import torch
from torch import nn

log = logging.getLogger("facelink.frozen")


def frozen_copy(model: nn.Module, examples: Sequence[torch.Tensor], name: str, tolerance: float = 1e-4
                ) -> tuple[nn.Module, bool]:
    """(the frozen graph, True), or (``model``, False) when tracing fails or the graph's outputs differ from the
    eager module's by more than ``tolerance`` (relative and absolute) on any of ``examples`` (traced on the first)."""
    try:
        with warnings.catch_warnings():
            # tracing warns about shape checks it bakes in (the branch valid inputs take) and freezing about
            # deprecations of its own; nothing else is silenced
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            with torch.no_grad():
                traced = torch.jit.trace(model.eval(), examples[0], check_trace=False)
                graph = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        with torch.inference_mode():
            for x in examples:
                for _ in range(2):  # the executor optimises on its first runs: check what it then runs
                    got = graph(x)
                want = model(x)
                if got.shape != want.shape or not torch.allclose(got, want, rtol=tolerance, atol=tolerance):
                    raise RuntimeError(f"the frozen graph differs from the eager module on input {tuple(x.shape)}")
    except Exception as e:  # noqa: BLE001 - any failure: the eager module, which is always right
        log.warning("%s stays eager (no frozen TorchScript graph): %s: %s", name, type(e).__name__, e)
        return model, False
    return graph, True
