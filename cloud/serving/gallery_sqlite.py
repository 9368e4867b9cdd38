"""The embedded gallery backend: one SQLite file in WAL mode, transactional, shareable by several servers.

Matching loads every template of the recognizer into one matrix and keeps it while the file is unchanged:
``PRAGMA data_version`` (which moves whenever another connection, in this process or another, commits) is read
before each use, so a server never answers from a cache older than another server's last write.

Erasure overwrites what it deletes (``secure_delete``) and checkpoints the write-ahead log afterwards, so the
removed embedding does not stay readable in the file or its log.
"""
from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

from facelink.cloud.serving.gallery import (
    MAX_ENROLLED_BY,
    MAX_SOURCE,
    Deletion,
    Gallery,
    GalleryError,
    GalleryUnavailable,
    IdentityRecord,
    Match,
    NotFoundError,
    Removal,
    Sample,
    check_embedding,
    check_label,
    check_query,
    check_sample_id,
    normalize_name,
    rank,
)

SCHEMA_VERSION = 2
_EMBEDDINGS = """
CREATE TABLE IF NOT EXISTS {table} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    recognizer TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    enrolled_by TEXT NOT NULL DEFAULT ''
)"""
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS identities "
    "(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at REAL NOT NULL)",
    _EMBEDDINGS.format(table="embeddings"),
]
_INDEXES = [
    "CREATE INDEX IF NOT EXISTS embeddings_by_recognizer ON embeddings(recognizer, identity_id)",
    "CREATE INDEX IF NOT EXISTS embeddings_by_identity ON embeddings(identity_id)",
]
# Version 1 (facelink 0.1): no enrolled_by, and sample ids could be reused after a delete (no AUTOINCREMENT).
_MIGRATE_1_TO_2 = [
    _EMBEDDINGS.format(table="embeddings_v2"),
    "INSERT INTO embeddings_v2(id, identity_id, recognizer, dim, vector, source, created_at) "
    "SELECT id, identity_id, recognizer, dim, vector, source, created_at FROM embeddings",
    "DROP TABLE embeddings",
    "ALTER TABLE embeddings_v2 RENAME TO embeddings",
]
BUSY_TIMEOUT_S = 10.0


class SQLiteGallery(Gallery):
    def __init__(self, path: str | Path, recognizer: str):
        self.path = str(path)
        self.recognizer = recognizer
        self._lock = threading.Lock()
        self._cache: tuple[int, list[str], np.ndarray] | None = None  # (data_version, names, templates)
        try:
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False,
                                       isolation_level=None)
        except sqlite3.Error as e:
            raise GalleryError(f"{self.path}: cannot open the gallery: {e}") from e
        with self._errors():
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA secure_delete = ON")
            if self.path != ":memory:":
                mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise GalleryError(f"{self.path}: cannot switch the gallery to WAL mode (got {mode})")
            self._setup()

    def _setup(self) -> None:
        with self._tx():
            self._db.execute(_SCHEMA[0])
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is not None and int(row[0]) not in (1, SCHEMA_VERSION):
                raise GalleryError(f"{self.path}: gallery schema {row[0]}, this facelink reads {SCHEMA_VERSION}")
            if row is not None and int(row[0]) == 1:
                for statement in _MIGRATE_1_TO_2:
                    self._db.execute(statement)
            for statement in _SCHEMA[1:] + _INDEXES:
                self._db.execute(statement)
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    @contextlib.contextmanager
    def _errors(self):
        """SQLite's own failures (locked past the timeout, disk full, unreadable file) as GalleryUnavailable."""
        try:
            yield
        except sqlite3.OperationalError as e:
            raise GalleryUnavailable(f"{self.path}: {e}") from e
        except sqlite3.DatabaseError as e:
            raise GalleryUnavailable(f"{self.path}: the gallery file is damaged or not a gallery: {e}") from e

    @contextlib.contextmanager
    def _tx(self):
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _find(self, name) -> tuple[int, str] | None:
        """(id, stored name): the name exactly as stored (names from older versions), else its canonical form."""
        if isinstance(name, str):
            row = self._db.execute("SELECT id, name FROM identities WHERE name = ?", (name,)).fetchone()
            if row:
                return row
        row = self._db.execute("SELECT id, name FROM identities WHERE name = ?", (normalize_name(name),)).fetchone()
        return row

    def _count(self, ident: int) -> int:
        return self._db.execute("SELECT COUNT(*) FROM embeddings WHERE identity_id = ? AND recognizer = ?",
                                (ident, self.recognizer)).fetchone()[0]

    def _forget(self) -> None:
        """After an erasure: overwrite the log's copies of the deleted pages (best effort if a reader holds it)."""
        if self.path != ":memory:":
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- writes ----------------------------------------------------------------------------------------------------
    def enroll(self, name: str, embedding: np.ndarray, source: str = "", enrolled_by: str = "") -> int:
        name = normalize_name(name)
        v = check_embedding(embedding)
        source = check_label(source, "source", MAX_SOURCE)
        enrolled_by = check_label(enrolled_by, "enrolled_by", MAX_ENROLLED_BY)
        now = time.time()
        with self._lock, self._errors(), self._tx():
            row = self._db.execute("SELECT dim FROM embeddings WHERE recognizer = ? LIMIT 1",
                                   (self.recognizer,)).fetchone()
            if row and row[0] != len(v):
                raise GalleryError(f"embedding of {len(v)} dimensions; {self.recognizer}'s are {row[0]}")
            self._db.execute("INSERT OR IGNORE INTO identities(name, created_at) VALUES (?, ?)", (name, now))
            (ident,) = self._db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
            self._db.execute(
                "INSERT INTO embeddings(identity_id, recognizer, dim, vector, source, created_at, enrolled_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", (ident, self.recognizer, len(v), v.tobytes(), source, now, enrolled_by))
            count = self._count(ident)
            self._cache = None
        return int(count)

    def delete_identity(self, name: str) -> Deletion:
        with self._lock, self._errors():
            with self._tx():
                found = self._find(name)
                if found is None:
                    raise NotFoundError(f"no identity named {name!r}")
                (n,) = self._db.execute("SELECT COUNT(*) FROM embeddings WHERE identity_id = ?", found[:1]).fetchone()
                self._db.execute("DELETE FROM identities WHERE id = ?", found[:1])  # samples go by cascade
                self._cache = None
            self._forget()
        return Deletion(found[1], int(n))

    def remove_sample(self, name: str, sample_id: int) -> Removal:
        sample_id = check_sample_id(sample_id)
        with self._lock, self._errors():
            with self._tx():
                found = self._find(name)
                if found is None:
                    raise NotFoundError(f"no identity named {name!r}")
                ident, stored = found
                if not self._db.execute("DELETE FROM embeddings WHERE id = ? AND identity_id = ?",
                                        (sample_id, ident)).rowcount:
                    raise NotFoundError(f"{stored!r} has no sample {sample_id}")
                left = self._count(ident)
                (any_left,) = self._db.execute("SELECT COUNT(*) FROM embeddings WHERE identity_id = ?",
                                               (ident,)).fetchone()
                if not any_left:
                    self._db.execute("DELETE FROM identities WHERE id = ?", (ident,))
                self._cache = None
            self._forget()
        return Removal(stored, int(left), not any_left)

    # -- reads -----------------------------------------------------------------------------------------------------
    def records(self, all_recognizers: bool = False) -> list[IdentityRecord]:
        on = "" if all_recognizers else " AND e.recognizer = ?"
        with self._lock, self._errors():
            rows = self._db.execute(
                "SELECT i.name, i.created_at, e.id, e.recognizer, e.created_at, e.enrolled_by, e.source "
                f"FROM identities i LEFT JOIN embeddings e ON e.identity_id = i.id{on} ORDER BY i.name, e.id",
                () if all_recognizers else (self.recognizer,)).fetchall()
        out: list[IdentityRecord] = []
        for name, created, sid, rec, at, by, source in rows:
            if not out or out[-1].name != name:
                out.append(IdentityRecord(name, float(created), ()))
            if sid is not None:
                last = out[-1]
                out[-1] = IdentityRecord(name, last.created_at, last.samples + (Sample(sid, rec, at, by, source),))
        return out

    def _templates(self) -> tuple[list[str], np.ndarray]:
        """One template per identity: the renormalised mean of its embeddings; reloaded when the file changed."""
        (version,) = self._db.execute("PRAGMA data_version").fetchone()
        if self._cache is None or self._cache[0] != version:
            rows = self._db.execute(
                "SELECT i.name, e.vector FROM embeddings e JOIN identities i ON i.id = e.identity_id "
                "WHERE e.recognizer = ? ORDER BY i.name, e.id", (self.recognizer,)).fetchall()
            sums: dict[str, np.ndarray] = {}
            for name, blob in rows:
                v = np.frombuffer(blob, dtype=np.float32)
                sums[name] = sums[name] + v if name in sums else v.copy()
            names = sorted(sums)
            mat = (np.stack([sums[n] / np.linalg.norm(sums[n]) for n in names]).astype(np.float32) if names
                   else np.zeros((0, 0), np.float32))
            self._cache = (version, names, mat)
        return self._cache[1], self._cache[2]

    def match(self, embedding: np.ndarray, top_k: int = 3) -> list[Match]:
        q = check_query(embedding)
        with self._lock, self._errors():
            names, mat = self._templates()
        if not names:
            return []
        if mat.shape[1] != len(q):
            raise GalleryError(f"query of {len(q)} dimensions; {self.recognizer}'s embeddings have {mat.shape[1]}")
        sims = mat @ q
        best = np.argsort(-sims, kind="stable")[: max(1, top_k)]
        return rank([(names[i], float(sims[i])) for i in best], top_k)

    def size(self) -> int:
        with self._lock, self._errors():
            (n,) = self._db.execute("SELECT COUNT(DISTINCT identity_id) FROM embeddings WHERE recognizer = ?",
                                    (self.recognizer,)).fetchone()
        return int(n)

    def check(self) -> None:
        with self._lock, self._errors():
            self._db.execute("SELECT COUNT(*) FROM meta").fetchone()

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    def close(self) -> None:
        with self._lock:
            self._db.close()
