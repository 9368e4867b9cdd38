"""The enrollment gallery: identities and their face embeddings in SQLite (one file, transactional).

Embeddings are stored per recognizer, so a gallery survives a change of recognizer without mixing spaces.
Enrolling never overwrites: each call adds a sample under the identity's name.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    recognizer TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS embeddings_by_recognizer ON embeddings(recognizer, identity_id);
"""
MAX_NAME = 200


class GalleryError(ValueError):
    pass


@dataclass(frozen=True)
class Match:
    identity: str
    similarity: float


class Gallery:
    def __init__(self, path: str | Path, recognizer: str):
        self.path = str(path)
        self.recognizer = recognizer
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA foreign_keys = ON")
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode = WAL")
        with self._tx():
            for statement in filter(str.strip, _SCHEMA.split(";")):  # executescript would commit mid-transaction
                self._db.execute(statement)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise GalleryError(f"{path}: gallery schema {row[0]}, this facelink reads {SCHEMA_VERSION}")
        self._cache: tuple[list[str], np.ndarray] | None = None

    def _tx(self):
        db = self._db

        class _Tx:
            def __enter__(self_):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self_, exc_type, *_):
                db.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()

    def enroll(self, name: str, embedding: np.ndarray, source: str = "") -> int:
        """Add one unit-norm embedding under ``name``; returns the identity's sample count for this recognizer."""
        name = name.strip() if isinstance(name, str) else name
        if not isinstance(name, str) or not name or len(name) > MAX_NAME or any(ord(c) < 32 for c in name):
            raise GalleryError(f"identity name must be 1–{MAX_NAME} printable characters, got {name!r}")
        v = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(v)) or abs(float(np.linalg.norm(v)) - 1) > 1e-3:
            raise GalleryError("embedding must be finite and unit-norm")
        with self._lock, self._tx():
            self._db.execute("INSERT OR IGNORE INTO identities(name, created_at) VALUES (?, ?)", (name, time.time()))
            (ident,) = self._db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
            self._db.execute(
                "INSERT INTO embeddings(identity_id, recognizer, dim, vector, source, created_at) VALUES (?,?,?,?,?,?)",
                (ident, self.recognizer, len(v), v.tobytes(), source, time.time()))
            (count,) = self._db.execute("SELECT COUNT(*) FROM embeddings WHERE identity_id = ? AND recognizer = ?",
                                        (ident, self.recognizer)).fetchone()
            self._cache = None
        return int(count)

    def identities(self) -> list[tuple[str, int]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT i.name, COUNT(e.id) FROM identities i LEFT JOIN embeddings e "
                "ON e.identity_id = i.id AND e.recognizer = ? GROUP BY i.id ORDER BY i.name", (self.recognizer,))
            return [(n, int(c)) for n, c in rows]

    def _templates(self) -> tuple[list[str], np.ndarray]:
        """One template per identity: the renormalised mean of its embeddings."""
        with self._lock:
            if self._cache is None:
                rows = self._db.execute(
                    "SELECT i.name, e.vector FROM embeddings e JOIN identities i ON i.id = e.identity_id "
                    "WHERE e.recognizer = ? ORDER BY i.name", (self.recognizer,)).fetchall()
                sums: dict[str, np.ndarray] = {}
                for name, blob in rows:
                    v = np.frombuffer(blob, dtype=np.float32)
                    sums[name] = sums[name] + v if name in sums else v.copy()
                names = sorted(sums)
                mat = np.stack([sums[n] / np.linalg.norm(sums[n]) for n in names]) if names else np.zeros((0, 0), np.float32)
                self._cache = (names, mat.astype(np.float32))
            return self._cache

    def match(self, embedding: np.ndarray, top_k: int = 3) -> list[Match]:
        names, mat = self._templates()
        if not names:
            return []
        sims = mat @ np.asarray(embedding, dtype=np.float32).reshape(-1)
        order = np.argsort(-sims)[: max(1, top_k)]
        return [Match(names[i], float(sims[i])) for i in order]

    def close(self) -> None:
        self._db.close()
