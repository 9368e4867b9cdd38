"""De-duplication of edge deliveries: the answer given to each (device id, sequence), kept so a repeat gets it again.

An edge resends every crop it has no answer for (its answer was lost with a dead link, a killed server or a killed
client). The server recognises a (device id, sequence) once, stores the answer in the same step that produces it,
and answers any repeat with the stored answer (``replayed`` set) instead of recognising the crop again.

The store is one SQLite file beside the gallery (WAL, ``synchronous=NORMAL``: a commit survives the server being
killed; a power cut may roll back the last commits, which can only make the server recognise again a crop whose
answer the edge had not received, never lose or double an answer the edge acted on). The answer is committed before
it is sent. Bounded by age and count: entries older than ``max_age_s`` and the oldest beyond ``max_entries`` are
removed (an edge resends within seconds of reconnecting, so the bound only has to outlast an outage's last
unanswered crops).

Two deliveries of the same key at once (a client that reconnected while the old stream's crop is still being
recognised) are recognised once: the second waits for the first's answer.
"""
from __future__ import annotations

import concurrent.futures
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from facelink.v1 import facelink_pb2 as pb

SCHEMA_VERSION = 1
MAX_DEVICE_ID = 256
PRUNE_EVERY = 1000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
    device_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    response BLOB NOT NULL,
    answered_at REAL NOT NULL,
    recognised INTEGER NOT NULL DEFAULT 1,
    replays INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, sequence)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS answers_by_time ON answers(answered_at)
"""


class DedupError(ValueError):
    pass


def path_beside(gallery: str | Path) -> str:
    """The de-duplication store's file for a gallery file: ``NAME-dedup.db`` in the same folder."""
    if str(gallery) == ":memory:":
        return ":memory:"
    p = Path(gallery)
    return str(p.with_name(f"{p.stem}-dedup.db"))


@dataclass(frozen=True)
class Delivery:
    """One key as the server saw it: how often it was recognised (1 unless de-duplication failed) and replayed."""
    device_id: str
    sequence: int
    recognised: int
    replays: int


class AnswerStoreBase:
    """What every answer store shares (this SQLite one and the PostgreSQL one in ``dedup_postgres``): the age and
    count bounds, the schema-version check, and a prune every ``PRUNE_EVERY`` answers stored."""

    def __init__(self, path: str, max_age_s: float, max_entries: int):
        if max_age_s <= 0 or max_entries < 1:
            raise DedupError(f"de-duplication bounds must be positive, got {max_age_s} s and {max_entries} entries")
        self.path = path
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._puts = 0

    def _check_schema(self, version: str) -> None:
        if int(version) != SCHEMA_VERSION:
            raise DedupError(f"{self.path}: de-duplication schema {version}, this facelink reads {SCHEMA_VERSION}")

    def _stored(self) -> None:
        """Count one answer stored; every ``PRUNE_EVERY``-th prunes the store."""
        with self._lock:
            self._puts += 1
            prune = self._puts % PRUNE_EVERY == 0
        if prune:
            self.prune()

    def prune(self) -> int:
        raise NotImplementedError


class DedupStore(AnswerStoreBase):
    def __init__(self, path: str | Path, max_age_s: float = 7 * 86400.0, max_entries: int = 1_000_000):
        super().__init__(str(path), max_age_s, max_entries)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")  # see the module docstring
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    self._db.execute(statement)
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                (version,) = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            finally:
                self._db.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            raise DedupError(f"{self.path}: not a usable de-duplication store ({e})") from e
        self._check_schema(version)
        self.prune()

    def get(self, device_id: str, sequence: int) -> bytes | None:
        """The stored answer for a key (counted as a replay), or None."""
        with self._lock:
            row = self._db.execute("SELECT response FROM answers WHERE device_id = ? AND sequence = ?",
                                   (device_id, sequence)).fetchone()
            if row is not None:
                self._db.execute("UPDATE answers SET replays = replays + 1 WHERE device_id = ? AND sequence = ?",
                                 (device_id, sequence))
        return None if row is None else bytes(row[0])

    def put(self, device_id: str, sequence: int, response: bytes) -> bytes:
        """Store the answer for a key and return the answer to give: the first one stored, if the key already had
        one (then the key counts as recognised once more: what the de-duplication is there to prevent)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO answers(device_id, sequence, response, answered_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(device_id, sequence) DO UPDATE SET recognised = recognised + 1",
                    (device_id, sequence, response, time.time()))
                (stored,) = self._db.execute("SELECT response FROM answers WHERE device_id = ? AND sequence = ?",
                                             (device_id, sequence)).fetchone()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self._stored()
        return bytes(stored)

    def prune(self) -> int:
        """Remove answers past the age or count bound; returns how many."""
        with self._lock:
            cur = self._db.execute("DELETE FROM answers WHERE answered_at < ?", (time.time() - self.max_age_s,))
            n = cur.rowcount
            (count,) = self._db.execute("SELECT COUNT(*) FROM answers").fetchone()
            if count > self.max_entries:
                n += self._db.execute(
                    "DELETE FROM answers WHERE (device_id, sequence) IN (SELECT device_id, sequence FROM answers "
                    "ORDER BY answered_at LIMIT ?)", (count - self.max_entries,)).rowcount
        return n

    def deliveries(self, device_id: str | None = None) -> list[Delivery]:
        """Every stored key (of one device id, or all), by device and sequence."""
        with self._lock:
            return _deliveries(self._db, device_id)

    @staticmethod
    def read_deliveries(path: str | Path, device_id: str | None = None) -> list[Delivery]:
        """:meth:`deliveries` of a store file, opened read-only (a running server may be writing it)."""
        db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
        try:
            return _deliveries(db, device_id)
        finally:
            db.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _deliveries(db: sqlite3.Connection, device_id: str | None) -> list[Delivery]:
    where, args = ("WHERE device_id = ?", (device_id,)) if device_id is not None else ("", ())
    rows = db.execute(f"SELECT device_id, sequence, recognised, replays FROM answers {where} "
                      "ORDER BY device_id, sequence", args).fetchall()
    return [Delivery(*r) for r in rows]


class Deduplicator:
    """Answers a request that carries a device id once per (device id, sequence); thread-safe (runs in the server's
    worker threads)."""

    def __init__(self, store: DedupStore):
        self.store = store
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, int], concurrent.futures.Future] = {}

    @staticmethod
    def _replay(stored: bytes, req: pb.RecognizeRequest) -> pb.RecognizeResponse:
        resp = pb.RecognizeResponse.FromString(stored)
        resp.id, resp.source, resp.replayed = req.id, req.source, True
        return resp

    def answer(self, req: pb.RecognizeRequest,
               recognize: Callable[[pb.RecognizeRequest], pb.RecognizeResponse]) -> pb.RecognizeResponse:
        if len(req.device_id) > MAX_DEVICE_ID:
            return pb.RecognizeResponse(id=req.id, source=req.source, error=pb.Error(
                code=pb.Error.INVALID_ARGUMENT, message=f"device_id longer than {MAX_DEVICE_ID} characters"))
        key = (req.device_id, req.sequence)
        with self._lock:
            running = self._inflight.get(key)
            if running is None:
                stored = self.store.get(*key)
                if stored is not None:
                    return self._replay(stored, req)
                running = self._inflight[key] = concurrent.futures.Future()
                owner = True
            else:
                owner = False
        if not owner:  # the same key is being recognised for an earlier delivery: its answer is this one's
            answer = running.result()
            return self._replay(self.store.get(*key) or answer, req)  # get() counts the replay
        try:
            resp = recognize(req)
            if resp.WhichOneof("outcome") == "error" and resp.error.code == pb.Error.INTERNAL:
                stored = None  # a server fault, not the frame's: a repeat may be recognised again
            else:
                clean = pb.RecognizeResponse()
                clean.CopyFrom(resp)
                clean.id = clean.source = ""
                stored = self.store.put(*key, clean.SerializeToString())
            running.set_result(stored if stored is not None else resp.SerializeToString())
        except BaseException as e:
            running.set_exception(e)
            raise
        finally:
            with self._lock:
                del self._inflight[key]
        return resp
