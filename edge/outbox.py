"""The on-device outbox: every coded crop waits here, durably, until the server has answered it.

One SQLite file (WAL). A crop is written to it *before* it is sent and removed only when its result has been
acknowledged, so a crash, a power cut, a dead link or a restarted server loses nothing that was queued: the sender
resends whatever is still here. Each crop gets the next sequence number of this outbox; the server de-duplicates
by (device id, sequence), so a crop resent after its answer was lost is answered from the server's store instead
of being recognised twice.

Durability: ``synchronous=FULL``. A camera loses power more often than its process crashes; under WAL with
``NORMAL`` a power cut can roll back the last commits, and a rolled-back *insert* is a crop lost without a trace
(the producer already moved on). ``FULL`` costs one fsync per commit, a few milliseconds, far below the rate at
which a camera produces crops worth sending.

Bounds: at most ``max_frames`` crops and ``max_bytes`` bytes of crops. When a new crop would pass either bound, the
oldest crops are dropped to make room (drop-oldest: during a long outage the newest faces matter most); every drop
is counted in the outbox itself and returned to the caller, who reports it.

The outbox names the device (``device``, default the host name) and its own *incarnation* (random, fixed when the
file is created). The wire device id is both: a deleted and recreated outbox restarts its sequence at 1 without
ever being mistaken by the server for the old one.
"""
from __future__ import annotations

import json
import secrets
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1
DEFAULT_MAX_FRAMES = 10_000
DEFAULT_MAX_BYTES = 64 << 20
MAX_DEVICE_NAME = 100
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS frames (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    data BLOB NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    meta TEXT NOT NULL DEFAULT '{}',
    queued_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    frames INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    queued INTEGER NOT NULL,
    acknowledged INTEGER NOT NULL,
    dropped_frames INTEGER NOT NULL,
    dropped_bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters VALUES (1, 0, 0, 0, 0, 0, 0);
CREATE TABLE IF NOT EXISTS queued_keys (key TEXT PRIMARY KEY, sequence INTEGER NOT NULL) WITHOUT ROWID
"""


class OutboxError(ValueError):
    pass


@dataclass(frozen=True)
class Frame:
    sequence: int
    data: bytes
    source: str
    queued_at: float
    meta: dict  # what the producer wants back with the answer (frame number, track, ...), JSON-able


@dataclass(frozen=True)
class Dropped:
    """A crop the drop-oldest policy removed before it was answered."""
    sequence: int
    source: str
    bytes: int


@dataclass(frozen=True)
class OutboxStats:
    frames: int          # waiting now (queued, not yet answered)
    bytes: int
    queued: int          # ever queued into this outbox
    acknowledged: int    # answered and removed
    dropped_frames: int  # removed unanswered by the drop-oldest policy
    dropped_bytes: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _check_device(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_DEVICE_NAME or any(ord(c) < 33 or c == "/" for c in name):
        raise OutboxError(f"device name must be 1–{MAX_DEVICE_NAME} printable characters without spaces or '/', "
                          f"got {name!r}")
    return name


class Outbox:
    """A bounded, durable FIFO of coded crops. Safe to share between a producer and a sender thread."""

    def __init__(self, path: str | Path, *, device: str | None = None, max_frames: int = DEFAULT_MAX_FRAMES,
                 max_bytes: int = DEFAULT_MAX_BYTES):
        if max_frames < 1 or max_bytes < 1:
            raise OutboxError(f"outbox bounds must be positive, got {max_frames} frames and {max_bytes} bytes")
        self.path = str(path)
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)
        if self.path != ":memory:":
            parent = Path(self.path).parent
            if not parent.is_dir():
                raise OutboxError(f"{self.path}: folder {parent} does not exist")
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")  # see the module docstring: power cuts, not just crashes
            with self._tx():
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    self._db.execute(statement)
                meta = dict(self._db.execute("SELECT key, value FROM meta"))
                if not meta:
                    meta = {"schema_version": str(SCHEMA_VERSION),
                            "device": _check_device(device or socket.gethostname()),
                            "incarnation": secrets.token_hex(8), "created_at": repr(time.time())}
                    self._db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        except sqlite3.DatabaseError as e:
            raise OutboxError(f"{self.path}: not a usable outbox ({e})") from e
        if int(meta["schema_version"]) != SCHEMA_VERSION:
            raise OutboxError(f"{self.path}: outbox schema {meta['schema_version']}, this facelink reads "
                              f"{SCHEMA_VERSION}")
        if device is not None and _check_device(device) != meta["device"]:
            raise OutboxError(f"{self.path} is the outbox of device {meta['device']!r}, not {device!r}: give another "
                              "--outbox for another device (its unanswered crops would otherwise be resent under "
                              "the wrong name)")
        self.device: str = meta["device"]
        self.incarnation: str = meta["incarnation"]

    @property
    def device_id(self) -> str:
        """What the server de-duplicates by, together with the sequence number: device name and incarnation."""
        return f"{self.device}/{self.incarnation}"

    def _tx(self):
        db = self._db

        class _Tx:
            def __enter__(self_):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self_, exc_type, *_):
                db.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()

    # -- producer side -------------------------------------------------------------------------------------------
    def put(self, data: bytes, source: str = "", key: str | None = None,
            meta: dict | None = None) -> tuple[int | None, list[Dropped]]:
        """Queue one coded crop durably. Returns its sequence number and the crops dropped to make room for it.

        With ``key`` (e.g. a file's path and content hash) a crop already queued under that key is not queued again
        (sequence ``None``): a restarted producer that re-reads its input resumes instead of repeating it.
        """
        if not data:
            raise OutboxError("an empty crop cannot be queued")
        meta_text = json.dumps(meta or {})
        if len(data) > self.max_bytes:
            raise OutboxError(f"a crop of {len(data)} bytes is larger than the outbox ({self.max_bytes} bytes)")
        with self._lock, self._tx():
            if key is not None and self._db.execute("SELECT 1 FROM queued_keys WHERE key = ?", (key,)).fetchone():
                return None, []
            frames, nbytes = self._db.execute("SELECT frames, bytes FROM counters").fetchone()
            dropped: list[Dropped] = []
            if frames + 1 > self.max_frames or nbytes + len(data) > self.max_bytes:
                for seq, source_, size in self._db.execute(
                        "SELECT sequence, source, length(data) FROM frames ORDER BY sequence"):
                    if frames + 1 <= self.max_frames and nbytes + len(data) <= self.max_bytes:
                        break
                    dropped.append(Dropped(seq, source_, size))
                    frames, nbytes = frames - 1, nbytes - size
                self._db.executemany("DELETE FROM frames WHERE sequence = ?", [(d.sequence,) for d in dropped])
                self._db.execute("UPDATE counters SET dropped_frames = dropped_frames + ?, "
                                 "dropped_bytes = dropped_bytes + ?",
                                 (len(dropped), sum(d.bytes for d in dropped)))
            seq = self._db.execute("INSERT INTO frames(data, source, meta, queued_at) VALUES (?, ?, ?, ?)",
                                   (data, source, meta_text, time.time())).lastrowid
            self._db.execute("UPDATE counters SET frames = ?, bytes = ?, queued = queued + 1",
                             (frames + 1, nbytes + len(data)))
            if key is not None:
                self._db.execute("INSERT INTO queued_keys VALUES (?, ?)", (key, seq))
            self._queued.notify_all()
        return seq, dropped

    # -- sender side ---------------------------------------------------------------------------------------------
    def pending(self, after: int = 0, limit: int = 64) -> list[Frame]:
        """Unanswered crops with a sequence number above ``after``, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT sequence, data, source, queued_at, meta FROM frames WHERE sequence > ? "
                                    "ORDER BY sequence LIMIT ?", (after, limit)).fetchall()
        return [Frame(s, bytes(d), src, t, json.loads(m)) for s, d, src, t, m in rows]

    def wait(self, after: int, timeout: float) -> bool:
        """Block until a crop above ``after`` is waiting (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        with self._queued:
            while True:
                if self._db.execute("SELECT 1 FROM frames WHERE sequence > ? LIMIT 1", (after,)).fetchone():
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._queued.wait(left)

    def ack(self, sequence: int) -> bool:
        """Remove an answered crop. False when it was no longer here (dropped by the policy, or acknowledged)."""
        with self._lock, self._tx():
            row = self._db.execute("SELECT length(data) FROM frames WHERE sequence = ?", (sequence,)).fetchone()
            if row is None:
                return False
            self._db.execute("DELETE FROM frames WHERE sequence = ?", (sequence,))
            self._db.execute("UPDATE counters SET frames = frames - 1, bytes = bytes - ?, "
                             "acknowledged = acknowledged + 1", (row[0],))
        return True

    def contains(self, sequence: int) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM frames WHERE sequence = ?", (sequence,)).fetchone() is not None

    def stats(self) -> OutboxStats:
        with self._lock:
            row = self._db.execute("SELECT frames, bytes, queued, acknowledged, dropped_frames, dropped_bytes "
                                   "FROM counters").fetchone()
        return OutboxStats(*map(int, row))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
