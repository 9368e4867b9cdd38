"""The enrollment gallery: identities and their face embeddings, behind one interface with two backends.

- :class:`~facelink.cloud.serving.gallery_sqlite.SQLiteGallery` (the embedded default): one SQLite file in WAL
  mode; several servers may share the file.
- :class:`~facelink.cloud.serving.gallery_postgres.PostgresGallery`: PostgreSQL with pgvector, for replicas that
  share one gallery; the match runs in SQL over an HNSW index.

``Gallery(spec, recognizer)`` opens the backend the spec names: a ``postgresql://`` (or ``postgres://``) URL or
a file path. Both give the same answers to the same calls (tests/test_gallery_backends.py runs one sequence on
both and compares).

What every backend keeps:

- Embeddings per recognizer, so a gallery survives a change of recognizer without mixing spaces.
- Enrolling never overwrites: each call adds a sample under the identity's name, with audit fields (when, by
  which caller, from which source).
- An identity is matched through its template, the renormalised mean of its samples; similarity is the cosine.
- Erasure: :meth:`Gallery.delete_identity` removes an identity and every sample of it (all recognizers);
  :meth:`Gallery.remove_sample` removes one sample, and the identity with its last one.
- No stale answers: a write through one gallery object (one server) is seen by the next call on every other
  object on the same file or database.

Names are canonical (:func:`normalize_name`): NFKC, surrounding whitespace removed and inner runs collapsed to one
space; control, format (zero-width, bidi), private-use and unassigned characters are refused, and so are names
that mix Latin, Greek and Cyrillic letters, the look-alike names of a spoofed identity.
"""
from __future__ import annotations

import abc
import math
import unicodedata
from dataclasses import dataclass

import numpy as np

MAX_NAME = 200  # characters, after normalisation
MAX_SOURCE = 256  # characters of a sample's source label (a file name, a camera id)
MAX_ENROLLED_BY = 128  # characters of the caller's name (an auth token's name)
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_CONFUSABLE_SCRIPTS = ("LATIN", "GREEK", "CYRILLIC")


class GalleryError(ValueError):
    """A request the gallery refuses (bad name, bad embedding, unknown identity or sample); the message says why."""


class NotFoundError(GalleryError):
    """The identity or sample named does not exist."""


class GalleryUnavailable(RuntimeError):
    """The gallery's database cannot be reached or failed; the request may be retried."""


@dataclass(frozen=True)
class Match:
    identity: str
    similarity: float


@dataclass(frozen=True)
class Sample:
    """One enrolled embedding's record (the embedding itself is not returned)."""

    id: int
    recognizer: str
    enrolled_at: float  # Unix time, seconds
    enrolled_by: str  # the caller's name (an auth token's name), "" when unknown
    source: str


@dataclass(frozen=True)
class IdentityRecord:
    name: str
    created_at: float  # Unix time, seconds
    samples: tuple[Sample, ...]


@dataclass(frozen=True)
class Deletion:
    """What :meth:`Gallery.delete_identity` erased: the identity as it was stored and its samples (all recognizers)."""

    identity: str
    samples_removed: int


@dataclass(frozen=True)
class Removal:
    """What :meth:`Gallery.remove_sample` left: samples for the gallery's recognizer, and whether the identity went
    with its last sample."""

    identity: str
    samples_left: int
    identity_deleted: bool


def _script(ch: str) -> str | None:
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    return next((s for s in _CONFUSABLE_SCRIPTS if name.startswith(s + " ")), None)


def normalize_name(name) -> str:
    """The canonical form of an identity name, or :class:`GalleryError` saying why it is refused."""
    if not isinstance(name, str):
        raise GalleryError(f"identity name must be a string, got {type(name).__name__}")
    if len(name) > 4 * MAX_NAME:
        raise GalleryError(f"identity name of {len(name)} characters; the limit is {MAX_NAME}")
    text = unicodedata.normalize("NFKC", name)
    for ch in text:
        category = unicodedata.category(ch)
        if category[0] == "C" or category in ("Zl", "Zp"):
            raise GalleryError(f"identity name contains U+{ord(ch):04X} ({unicodedata.name(ch, 'unnamed')}, "
                               f"category {category}): control, format (zero-width, bidi) and unassigned "
                               "characters are not allowed")
    text = " ".join(text.split())  # only spaces (category Zs) are left to collapse
    if not text or len(text) > MAX_NAME:
        raise GalleryError(f"identity name must be 1–{MAX_NAME} characters after normalisation, got {len(text)}")
    scripts = {s for s in map(_script, text) if s}
    if len(scripts) > 1:
        raise GalleryError(f"identity name mixes {' and '.join(sorted(s.title() for s in scripts))} letters "
                           "(a look-alike of another name); write it in one script")
    return text


def check_label(value, what: str, limit: int) -> str:
    """A free-text label (source, caller name): a string of at most ``limit`` printable characters."""
    if not isinstance(value, str):
        raise GalleryError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise GalleryError(f"{what} of {len(value)} characters; the limit is {limit}")
    if any(unicodedata.category(c)[0] == "C" for c in value):
        raise GalleryError(f"{what} contains control or format characters")
    return value


def check_embedding(embedding) -> np.ndarray:
    """A finite, unit-norm float32 vector, as every recognizer gives."""
    v = np.asarray(embedding, dtype=np.float32).reshape(-1)
    if not len(v) or not np.all(np.isfinite(v)) or abs(float(np.linalg.norm(v)) - 1) > 1e-3:
        raise GalleryError("embedding must be a non-empty, finite, unit-norm vector")
    return v


def check_query(embedding) -> np.ndarray:
    """A finite, non-zero query vector, scaled to unit norm (the cosine does not depend on its length)."""
    v = np.asarray(embedding, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v)) if len(v) and np.all(np.isfinite(v)) else 0.0
    if not norm or not math.isfinite(norm):
        raise GalleryError("query embedding must be a non-empty, finite, non-zero vector")
    return v / np.float32(norm)


def check_sample_id(sample_id) -> int:
    if isinstance(sample_id, bool) or not isinstance(sample_id, (int, np.integer)) or not 0 < sample_id < 2**63:
        raise GalleryError(f"sample id must be a positive integer, got {sample_id!r}")
    return int(sample_id)


def rank(pairs: list[tuple[str, float]], top_k: int) -> list[Match]:
    """The ``top_k`` best (name, similarity) pairs: highest similarity first, ties by name."""
    pairs = sorted(pairs, key=lambda p: (-p[1], p[0]))
    return [Match(n, float(s)) for n, s in pairs[: max(1, top_k)]]


def is_postgres_url(spec) -> bool:
    return isinstance(spec, str) and spec.startswith(POSTGRES_SCHEMES)


class Gallery(abc.ABC):
    """The gallery interface. ``Gallery(spec, recognizer)`` opens the backend ``spec`` names (see the module)."""

    recognizer: str

    def __new__(cls, spec=None, recognizer: str | None = None, *args, **kwargs):
        if cls is Gallery:
            cls = _backend_for(spec)
        return super().__new__(cls)

    # -- writes ----------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def enroll(self, name: str, embedding: np.ndarray, source: str = "", enrolled_by: str = "") -> int:
        """Add one unit-norm embedding under ``name``; returns the identity's sample count for this recognizer."""

    @abc.abstractmethod
    def delete_identity(self, name: str) -> Deletion:
        """Erase an identity and all its samples, for every recognizer.
        :class:`NotFoundError` if there is no such identity."""

    @abc.abstractmethod
    def remove_sample(self, name: str, sample_id: int) -> Removal:
        """Erase one sample of an identity (any recognizer); the identity goes with its last sample.
        :class:`NotFoundError` if the identity has no such sample."""

    # -- reads -----------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def records(self, all_recognizers: bool = False) -> list[IdentityRecord]:
        """Every identity by name, with its samples for this recognizer (or for every one)."""

    @abc.abstractmethod
    def match(self, embedding: np.ndarray, top_k: int = 3) -> list[Match]:
        """The ``top_k`` identities whose templates are most similar (cosine) to ``embedding``, best first."""

    @abc.abstractmethod
    def size(self) -> int:
        """Identities with at least one sample for this recognizer."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise :class:`GalleryUnavailable` unless the gallery can be read now (for readiness probes)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the file or the database connections."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the gallery lives, safe to log (no password)."""

    def identities(self) -> list[tuple[str, int]]:
        """(name, samples for this recognizer) of every identity, by name."""
        return [(r.name, len(r.samples)) for r in self.records()]

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


def _backend_for(spec) -> type[Gallery]:
    if is_postgres_url(spec):
        from facelink.cloud.serving.gallery_postgres import PostgresGallery

        return PostgresGallery
    if isinstance(spec, str) and "://" in spec:
        raise GalleryError(f"unsupported gallery URL {spec.split('://')[0]}://...; give a file path (SQLite) or a "
                           "postgresql:// URL")
    from facelink.cloud.serving.gallery_sqlite import SQLiteGallery

    return SQLiteGallery

