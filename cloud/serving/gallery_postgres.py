"""The shared gallery backend: PostgreSQL with pgvector, for several server replicas on one gallery.

Tables (prefixed ``facelink_``): identities; samples, one row per enrolled embedding with its audit fields;
templates, one row per identity and recognizer holding the mean of its samples (cosine does not depend on the
mean's length), rewritten in the same transaction as every change of its samples. The match is one SQL query:
cosine distance (``<=>``) to the templates, ``ORDER BY ... LIMIT k`` over an HNSW index per recognizer and
dimension (a partial expression index, created when a recognizer's first embedding arrives). Nothing is cached
in the server, so replicas see each other's writes at once.

The URL is libpq's (``postgresql://user[:password]@host[:port]/db?sslmode=verify-full``); a password may come
from ``PGPASSWORD`` or ``~/.pgpass`` instead. The database needs the ``vector`` extension: it is created if the
user may (a superuser, or a database owner where it is trusted), else an administrator runs
``CREATE EXTENSION vector`` once.

Erasure deletes rows; PostgreSQL reclaims the space at its next (auto)vacuum, so the deleted embeddings stay in
the database's files until then and in any WAL archive or backup kept by the operator.
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from urllib.parse import urlsplit, urlunsplit

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

SCHEMA_VERSION = 1
CONNECT_TIMEOUT_S = 10
_IDLE_PING_S = 5.0  # a pooled connection idle longer than this is checked before use
_MAX_IDLE = 8
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS facelink_meta (key text PRIMARY KEY, value text NOT NULL)",
    """CREATE TABLE IF NOT EXISTS facelink_identities (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL UNIQUE,
        created_at timestamptz NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS facelink_samples (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        identity_id bigint NOT NULL REFERENCES facelink_identities(id) ON DELETE CASCADE,
        recognizer text NOT NULL,
        dim integer NOT NULL,
        embedding vector NOT NULL,
        source text NOT NULL DEFAULT '',
        enrolled_at timestamptz NOT NULL,
        enrolled_by text NOT NULL DEFAULT '')""",
    "CREATE INDEX IF NOT EXISTS facelink_samples_by_identity ON facelink_samples(identity_id, recognizer)",
    "CREATE INDEX IF NOT EXISTS facelink_samples_by_recognizer ON facelink_samples(recognizer)",
    """CREATE TABLE IF NOT EXISTS facelink_templates (
        identity_id bigint NOT NULL REFERENCES facelink_identities(id) ON DELETE CASCADE,
        recognizer text NOT NULL,
        dim integer NOT NULL,
        template vector NOT NULL,
        PRIMARY KEY (identity_id, recognizer))""",
]
_SETUP_LOCK = 0x666C6B67  # advisory lock key ("flkg") that serialises schema and index creation across replicas


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def _psycopg():
    try:
        import psycopg
    except ImportError as e:  # pragma: no cover - psycopg is in the cloud extra
        raise GalleryError("a postgresql:// gallery needs psycopg 3: pip install 'psycopg[binary]'") from e
    return psycopg


class _StaleConnection(GalleryUnavailable):
    """A reused connection failed: the database restarted or dropped it."""


class _Pool:
    """A few open connections, reused; a broken one is dropped, an idle one is pinged before it is lent again."""

    def __init__(self, url: str):
        self.url = url
        self._idle: list[tuple[object, float]] = []
        self._lock = threading.Lock()
        self._closed = False

    def _connect(self):
        psycopg = _psycopg()
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                   application_name="facelink")
        except psycopg.Error as e:
            raise GalleryUnavailable(f"{redact(self.url)}: cannot connect: {e}") from e

    @contextlib.contextmanager
    def connection(self, ping: bool = False):
        """A connection for one piece of work. A reused one is checked first when it has been idle a while, or
        always with ``ping`` (for writes, which are not retried). A failure on a reused connection raises
        :class:`_StaleConnection`, which a read may retry on a new one."""
        psycopg = _psycopg()
        conn, reused = None, False
        while conn is None:
            with self._lock:
                if self._closed:
                    raise GalleryUnavailable("the gallery is closed")
                candidate, since = self._idle.pop() if self._idle else (None, 0.0)
            if candidate is None:
                conn = self._connect()
            elif ping or time.monotonic() - since > _IDLE_PING_S:
                try:
                    candidate.execute("SELECT 1")
                    conn, reused = candidate, True
                except psycopg.Error:
                    candidate.close()
            else:
                conn, reused = candidate, True
        try:
            yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            conn.close()
            raise (_StaleConnection if reused else GalleryUnavailable)(
                f"{redact(self.url)}: {type(e).__name__}: {e}") from e
        except BaseException:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.close()
            raise
        finally:
            if not conn.closed:
                with self._lock:
                    if self._closed or len(self._idle) >= _MAX_IDLE:
                        conn.close()
                    else:
                        self._idle.append((conn, time.monotonic()))

    def read(self, work):
        """``work(conn)`` for a read: once more on a new connection if a reused one turned out dead (the database
        restarted, or dropped it while idle)."""
        try:
            with self.connection() as conn:
                return work(conn)
        except _StaleConnection:
            with self.connection() as conn:
                return work(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn, _ in self._idle:
                conn.close()
            self._idle.clear()


class PostgresGallery(Gallery):
    def __init__(self, url: str, recognizer: str):
        self.url = url
        self.recognizer = recognizer
        self._pool = _Pool(url)
        self._indexed: set[int] = set()  # dimensions whose HNSW index this object has made sure of
        self._setup()

    # -- schema ----------------------------------------------------------------------------------------------------
    def _setup(self) -> None:
        psycopg = _psycopg()
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
                try:
                    with conn.transaction():
                        conn.execute("CREATE EXTENSION vector")
                except psycopg.Error as e:
                    raise GalleryError(f"{redact(self.url)}: the database lacks the pgvector extension and this "
                                       f"user cannot create it ({e.diag.message_primary}); an administrator runs "
                                       "CREATE EXTENSION vector once") from e
            for statement in _SCHEMA:
                conn.execute(statement)
            row = conn.execute("SELECT value FROM facelink_meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                conn.execute("INSERT INTO facelink_meta VALUES ('schema_version', %s)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise GalleryError(f"{redact(self.url)}: gallery schema {row[0]}, this facelink reads "
                                   f"{SCHEMA_VERSION}")

    def _index_name(self, dim: int) -> str:
        return "facelink_templates_hnsw_" + hashlib.sha1(f"{self.recognizer}\0{dim}".encode()).hexdigest()[:16]

    def _where(self, dim: int, table: str = "t."):
        """The templates of this recognizer and dimension: the partial index's predicate, as literals."""
        from psycopg import sql

        return sql.SQL(table + "recognizer = {} AND " + table + "dim = {}").format(sql.Literal(self.recognizer),
                                                                                  sql.Literal(dim))

    def _vector(self, dim: int, table: str = "t."):
        """The indexed expression: the template as a vector of ``dim`` dimensions."""
        from psycopg import sql

        return sql.SQL("(" + table + "template::vector({}))").format(sql.Literal(dim))

    def _ensure_index(self, conn, dim: int) -> None:
        """The HNSW index (cosine) over this recognizer's templates of this dimension, made once per database."""
        if dim in self._indexed:
            return
        from psycopg import sql

        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
            conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON facelink_templates USING hnsw ({} "
                                 "vector_cosine_ops) WHERE {}").format(
                sql.Identifier(self._index_name(dim)), self._vector(dim, ""), self._where(dim, "")))
        self._indexed.add(dim)

    # -- helpers ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _lock_identity(conn, name) -> tuple[int, str] | None:
        """(id, stored name) of the identity, row-locked until the transaction ends, or None."""
        if isinstance(name, str):
            row = conn.execute("SELECT id, name FROM facelink_identities WHERE name = %s FOR UPDATE",
                               (name,)).fetchone()
            if row:
                return row
        return conn.execute("SELECT id, name FROM facelink_identities WHERE name = %s FOR UPDATE",
                            (normalize_name(name),)).fetchone()

    @staticmethod
    def _refresh_template(conn, ident: int, recognizer: str) -> int:
        """Rewrite the identity's template for ``recognizer`` from its samples; returns how many it has."""
        (n,) = conn.execute("SELECT count(*) FROM facelink_samples WHERE identity_id = %s AND recognizer = %s",
                            (ident, recognizer)).fetchone()
        if not n:
            conn.execute("DELETE FROM facelink_templates WHERE identity_id = %s AND recognizer = %s",
                         (ident, recognizer))
            return 0
        conn.execute("INSERT INTO facelink_templates(identity_id, recognizer, dim, template) "
                     "SELECT identity_id, recognizer, min(dim), avg(embedding) FROM facelink_samples "
                     "WHERE identity_id = %s AND recognizer = %s GROUP BY identity_id, recognizer "
                     "ON CONFLICT (identity_id, recognizer) DO UPDATE SET template = EXCLUDED.template, "
                     "dim = EXCLUDED.dim", (ident, recognizer))
        return int(n)

    @staticmethod
    def _text(v: np.ndarray) -> str:
        """pgvector's text form; float32 values written with repr, which reads back to the same float32."""
        return "[" + ",".join(repr(float(x)) for x in v.astype(np.float32)) + "]"

    # -- writes ----------------------------------------------------------------------------------------------------
    def enroll(self, name: str, embedding: np.ndarray, source: str = "", enrolled_by: str = "") -> int:
        name = normalize_name(name)
        v = check_embedding(embedding)
        source = check_label(source, "source", MAX_SOURCE)
        enrolled_by = check_label(enrolled_by, "enrolled_by", MAX_ENROLLED_BY)
        now = time.time()
        with self._pool.connection(ping=True) as conn:
            self._ensure_index(conn, len(v))
            with conn.transaction():
                row = conn.execute("SELECT dim FROM facelink_samples WHERE recognizer = %s LIMIT 1",
                                   (self.recognizer,)).fetchone()
                if row and row[0] != len(v):
                    raise GalleryError(f"embedding of {len(v)} dimensions; {self.recognizer}'s are {row[0]}")
                conn.execute("INSERT INTO facelink_identities(name, created_at) VALUES (%s, to_timestamp(%s)) "
                             "ON CONFLICT (name) DO NOTHING", (name, now))
                (ident, _) = self._lock_identity(conn, name)
                conn.execute("INSERT INTO facelink_samples(identity_id, recognizer, dim, embedding, source, "
                             "enrolled_at, enrolled_by) VALUES (%s, %s, %s, %s::vector, %s, to_timestamp(%s), %s)",
                             (ident, self.recognizer, len(v), self._text(v), source, now, enrolled_by))
                return self._refresh_template(conn, ident, self.recognizer)

    def delete_identity(self, name: str) -> Deletion:
        with self._pool.connection(ping=True) as conn, conn.transaction():
            found = self._lock_identity(conn, name)
            if found is None:
                raise NotFoundError(f"no identity named {name!r}")
            (n,) = conn.execute("SELECT count(*) FROM facelink_samples WHERE identity_id = %s", found[:1]).fetchone()
            conn.execute("DELETE FROM facelink_identities WHERE id = %s", found[:1])  # samples, templates: cascade
        return Deletion(found[1], int(n))

    def remove_sample(self, name: str, sample_id: int) -> Removal:
        sample_id = check_sample_id(sample_id)
        with self._pool.connection(ping=True) as conn, conn.transaction():
            found = self._lock_identity(conn, name)
            if found is None:
                raise NotFoundError(f"no identity named {name!r}")
            ident, stored = found
            row = conn.execute("DELETE FROM facelink_samples WHERE id = %s AND identity_id = %s RETURNING recognizer",
                               (sample_id, ident)).fetchone()
            if row is None:
                raise NotFoundError(f"{stored!r} has no sample {sample_id}")
            self._refresh_template(conn, ident, row[0])
            (left,) = conn.execute("SELECT count(*) FROM facelink_samples WHERE identity_id = %s AND recognizer = %s",
                                   (ident, self.recognizer)).fetchone()
            (any_left,) = conn.execute("SELECT count(*) FROM facelink_samples WHERE identity_id = %s",
                                       (ident,)).fetchone()
            if not any_left:
                conn.execute("DELETE FROM facelink_identities WHERE id = %s", (ident,))
        return Removal(stored, int(left), not any_left)

    # -- reads -----------------------------------------------------------------------------------------------------
    def records(self, all_recognizers: bool = False) -> list[IdentityRecord]:
        on = "" if all_recognizers else " AND s.recognizer = %s"
        rows = self._pool.read(lambda conn: conn.execute(
            "SELECT i.name, extract(epoch FROM i.created_at)::float8, s.id, s.recognizer, "
            "extract(epoch FROM s.enrolled_at)::float8, s.enrolled_by, s.source FROM facelink_identities i "
            f"LEFT JOIN facelink_samples s ON s.identity_id = i.id{on} ORDER BY i.name COLLATE \"C\", s.id",
            () if all_recognizers else (self.recognizer,)).fetchall())
        out: list[IdentityRecord] = []
        for name, created, sid, rec, at, by, source in rows:
            if not out or out[-1].name != name:
                out.append(IdentityRecord(name, float(created), ()))
            if sid is not None:
                last = out[-1]
                out[-1] = IdentityRecord(name, last.created_at, last.samples + (Sample(sid, rec, at, by, source),))
        return out

    def match(self, embedding: np.ndarray, top_k: int = 3) -> list[Match]:

        q = check_query(embedding)
        k = max(1, int(top_k))
        return rank([(n, float(s)) for n, s in self._pool.read(lambda conn: self._match(conn, q, k))], k)

    def _match(self, conn, q: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k nearest templates by cosine distance, in SQL, over this recognizer's HNSW index."""
        from psycopg import sql

        self._ensure_index(conn, len(q))
        with conn.transaction():
            # the HNSW candidate list must be at least k long to return k rows (its default is 40)
            conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(max(40, min(1000, 2 * k)))))
            rows = conn.execute(sql.SQL(
                "SELECT i.name, 1 - ({v} <=> %(q)s::vector({d})) FROM facelink_templates t "
                "JOIN facelink_identities i ON i.id = t.identity_id WHERE {where} "
                "ORDER BY {v} <=> %(q)s::vector({d}) LIMIT %(k)s").format(
                v=self._vector(len(q)), d=sql.Literal(len(q)), where=self._where(len(q))),
                {"q": self._text(q), "k": k}).fetchall()
        if not rows:
            (other,) = conn.execute("SELECT min(dim) FROM facelink_templates WHERE recognizer = %s",
                                    (self.recognizer,)).fetchone()
            if other is not None and other != len(q):
                raise GalleryError(f"query of {len(q)} dimensions; {self.recognizer}'s embeddings have {other}")
        return rows

    def size(self) -> int:
        (n,) = self._pool.read(lambda conn: conn.execute(
            "SELECT count(*) FROM facelink_templates WHERE recognizer = %s", (self.recognizer,)).fetchone())
        return int(n)

    def check(self) -> None:
        self._pool.read(lambda conn: conn.execute("SELECT 1 FROM facelink_meta LIMIT 1").fetchone())

    def describe(self) -> str:
        return redact(self.url)

    def close(self) -> None:
        self._pool.close()
