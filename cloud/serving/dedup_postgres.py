"""The de-duplication store in PostgreSQL: the answers kept per (device id, sequence) in the gallery's own database,
so that every replica serving one ``postgresql://`` gallery sees every answer, whichever replica gave it (an edge
that reconnects to another replica, or to one on another host, gets its stored answer, not a second recognition).

Same interface and semantics as the SQLite store (:class:`facelink.cloud.serving.dedup.DedupStore`): one table,
``facelink_dedup_answers``; ``put`` keeps the first answer stored for a key (an atomic ``INSERT ... ON CONFLICT``,
also between replicas) and counts any further recognition; ``get`` counts a replay in the same statement; bounded
by age and count. An answer is committed (autocommit) before it is sent.
"""
from __future__ import annotations

import time

from facelink.cloud.serving.dedup import SCHEMA_VERSION, AnswerStoreBase, DedupError, Delivery
from facelink.cloud.serving.gallery import GalleryUnavailable
from facelink.cloud.serving.gallery_postgres import _Pool, _psycopg, redact

_SETUP_LOCK = 0x666C6B64  # advisory lock key ("flkd") that serialises the table's creation across replicas
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS facelink_meta (key text PRIMARY KEY, value text NOT NULL)",
    """CREATE TABLE IF NOT EXISTS facelink_dedup_answers (
        device_id text NOT NULL,
        sequence bigint NOT NULL,
        response bytea NOT NULL,
        answered_at double precision NOT NULL,
        recognised integer NOT NULL DEFAULT 1,
        replays integer NOT NULL DEFAULT 0,
        PRIMARY KEY (device_id, sequence))""",
    "CREATE INDEX IF NOT EXISTS facelink_dedup_answers_by_time ON facelink_dedup_answers(answered_at)",
]
_VERSION_KEY = "dedup_schema_version"


class PostgresDedupStore(AnswerStoreBase):
    def __init__(self, url: str, max_age_s: float = 7 * 86400.0, max_entries: int = 1_000_000):
        super().__init__(redact(url), max_age_s, max_entries)
        self._pool = _Pool(url)
        psycopg = _psycopg()
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute("INSERT INTO facelink_meta VALUES (%s, %s) ON CONFLICT DO NOTHING",
                             (_VERSION_KEY, str(SCHEMA_VERSION)))
                (version,) = conn.execute("SELECT value FROM facelink_meta WHERE key = %s",
                                          (_VERSION_KEY,)).fetchone()
        except psycopg.Error as e:
            raise DedupError(f"{self.path}: not a usable de-duplication store ({e})") from e
        self._check_schema(version)
        self.prune()

    def _run(self, work):
        psycopg = _psycopg()
        try:
            with self._pool.connection(ping=True) as conn:
                return work(conn)
        except psycopg.Error as e:
            raise GalleryUnavailable(f"{self.path}: de-duplication store: {type(e).__name__}: {e}") from e

    def get(self, device_id: str, sequence: int) -> bytes | None:
        """The stored answer for a key (counted as a replay), or None."""
        row = self._run(lambda c: c.execute(
            "UPDATE facelink_dedup_answers SET replays = replays + 1 WHERE device_id = %s AND sequence = %s "
            "RETURNING response", (device_id, sequence)).fetchone())
        return None if row is None else bytes(row[0])

    def put(self, device_id: str, sequence: int, response: bytes) -> bytes:
        """Store the answer for a key and return the answer to give: the first one stored, by any replica."""
        (stored,) = self._run(lambda c: c.execute(
            "INSERT INTO facelink_dedup_answers(device_id, sequence, response, answered_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (device_id, sequence) DO UPDATE SET recognised = facelink_dedup_answers.recognised + 1 "
            "RETURNING response", (device_id, sequence, response, time.time())).fetchone())
        self._stored()
        return bytes(stored)

    def prune(self) -> int:
        """Remove answers past the age or count bound; returns how many."""
        def work(conn):
            n = conn.execute("DELETE FROM facelink_dedup_answers WHERE answered_at < %s",
                             (time.time() - self.max_age_s,)).rowcount
            (count,) = conn.execute("SELECT COUNT(*) FROM facelink_dedup_answers").fetchone()
            if count > self.max_entries:
                n += conn.execute(
                    "DELETE FROM facelink_dedup_answers WHERE (device_id, sequence) IN (SELECT device_id, sequence "
                    "FROM facelink_dedup_answers ORDER BY answered_at LIMIT %s)", (count - self.max_entries,)).rowcount
            return n
        return self._run(work)

    def deliveries(self, device_id: str | None = None) -> list[Delivery]:
        """Every stored key (of one device id, or all), by device and sequence."""
        where, args = ("WHERE device_id = %s", (device_id,)) if device_id is not None else ("", ())
        rows = self._run(lambda c: c.execute(
            f"SELECT device_id, sequence, recognised, replays FROM facelink_dedup_answers {where} "
            "ORDER BY device_id, sequence", args).fetchall())
        return [Delivery(*r) for r in rows]

    def close(self) -> None:
        self._pool.close()
