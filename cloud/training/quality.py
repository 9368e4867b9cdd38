"""The quality index ``q`` of a rate point: one table from ``q`` to the λ it is trained for, for every ladder.

As CompressAI's quality index (``bmshj2018_factorized(quality=3)``) names one λ whatever the architecture, a
facelink rate point ``face-<family>-q<k>`` is trained with ``lmbda == LAMBDAS[k]`` in every family
(:mod:`facelink.cloud.training.ladder` refuses a ladder whose point names break this, unless it is one of the
documented legacy ladders below). λ weighs 255²·MSE (plus α·D_identity) against bits per pixel, CompressAI's
convention; a step of ``q`` multiplies λ by about 1.6, so bytes per face grow by about a fifth to a third.

The table is the one the face-weighted ladders (``iprf`` and every ladder after it) were trained on, extended by
the first model's λ (q8). Names made before it keep their meaning where they differ, documented here and in each
legacy ladder's ``legacy_names`` (cloud/training/ladders/), so committed manifests and results stay readable:

============================  =============  =====================================================
legacy name                   λ              on this table
============================  =============  =====================================================
``face-msh-q4``               0.013          q8; named on CompressAI's scale, whose q4 is λ 0.013
``face-ipr-q1`` … ``q5``      0.0018 … 0.013  q4 … q8 (q = k + 3); likewise ``face-pix-q1`` … ``q5``
``face-ipr-q0``, ``pix-q0``   0.0009         between q2 and q3 (half of q4's λ)
``face-pixlong-q1``           0.0009         between q2 and q3: λ chosen to match iprlong-q1's bytes
============================  =============  =====================================================

So ``face-ipr-q5`` and ``face-msh-q4`` share λ 0.013 (q8): the first was fine-tuned from the second with the
identity term.
"""
from __future__ import annotations

import math

# q -> λ. Append only: a committed model's name depends on its index.
LAMBDAS: tuple[float, ...] = (0.0003, 0.00045, 0.0007, 0.0011, 0.0018, 0.003, 0.0048, 0.0079, 0.013)


def lmbda(q: int) -> float:
    """The λ quality ``q`` is trained for; a clear error for a ``q`` outside the table."""
    if isinstance(q, bool) or not isinstance(q, int) or not 0 <= q < len(LAMBDAS):
        raise ValueError(f"quality must be an integer in 0..{len(LAMBDAS) - 1}, got {q!r}")
    return LAMBDAS[q]


def quality_of(lmbda_: float) -> int | None:
    """The table's ``q`` for exactly this λ, or None when λ is off the table (a legacy point)."""
    return next((q for q, x in enumerate(LAMBDAS) if math.isclose(x, lmbda_, rel_tol=1e-9)), None)
