"""The edge's one error type: a problem the user can fix (bad input, no server, a refused setting), printed as one
line by ``facelink-edge`` with exit status 2 and never as a traceback."""
from __future__ import annotations


class EdgeError(Exception):
    """A clear, user-facing failure of an edge command."""
