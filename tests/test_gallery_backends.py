"""Both gallery backends, SQLite and PostgreSQL + pgvector (a real server, see conftest.postgres_server): the same
calls give the same answers, and several gallery objects (servers) on one gallery see each other's writes."""
import threading

import numpy as np
import pytest

from facelink.cloud.serving.gallery import Gallery, GalleryError, GalleryUnavailable, NotFoundError
from facelink.cloud.serving.gallery_postgres import PostgresGallery, redact
from facelink.cloud.serving.gallery_sqlite import SQLiteGallery

DIM = 64


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(params=["sqlite", "postgresql"])
def spec(request, tmp_path):
    """A new, empty gallery of each backend."""
    return str(tmp_path / "g.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def transcript(spec: str) -> list:
    """One fixed sequence of enrolments, matches, listings, removals and deletions on two recognizers' spaces,
    with every answer (or error) written down; times are left out, sample ids are in."""
    rng = np.random.default_rng(7)
    centres = {n: rng.normal(size=DIM) for n in ("Ada", "Bob", "Cy", "Dee", "Eve", "Юрий")}
    out: list = []

    def note(label, fn, *args):
        try:
            out.append((label, fn(*args)))
        except GalleryError as e:
            out.append((label, type(e).__name__, str(e)))

    a, b = Gallery(spec, "rec-a"), Gallery(spec, "rec-b")
    probes = [unit(c + rng.normal(scale=0.8, size=DIM)) for c in centres.values()]

    def matches(g, k=3):
        return [[(m.identity, round(m.similarity, 5)) for m in g.match(p, k)] for p in probes]

    def listing(g, every=False):
        return [(r.name, [(s.id, s.recognizer, s.source, s.enrolled_by) for s in r.samples])
                for r in g.records(every)]

    note("empty", lambda: matches(a))
    for i in range(24):
        name = list(centres)[i % len(centres)]
        emb = unit(centres[name] + rng.normal(scale=0.6, size=DIM))
        note(f"enrol {i}", a.enroll, name, emb, f"{name}-{i}.jpg", f"token-{i % 3}")
        if i % 5 == 0:
            note(f"match {i}", matches, a, 1 + i % 4)
    note("other space", lambda: b.enroll("Ada", unit(rng.normal(size=DIM // 2)), enrolled_by="t"))
    note("wrong dimension", lambda: a.enroll("Ada", unit(rng.normal(size=DIM // 2))))
    note("bad name", lambda: a.enroll("A\u200bda", probes[0]))
    note("list a", lambda: listing(a))
    note("list all", lambda: listing(a, every=True))
    note("size", lambda: (a.size(), b.size()))
    ids = [s.id for s in a.records()[1].samples]  # Bob's
    note("remove one", lambda: a.remove_sample("Bob", ids[0]))
    note("remove foreign", lambda: a.remove_sample("Cy", ids[1]))
    note("matches after removal", lambda: matches(a, 6))
    note("delete", lambda: a.delete_identity("Dee"))
    note("delete again", lambda: a.delete_identity("Dee"))
    note("delete across spaces", lambda: b.delete_identity("Ada"))
    for sid in ids[1:]:
        note(f"remove {sid}", a.remove_sample, "Bob", sid)
    note("final list", lambda: listing(a, every=True))
    note("final matches", lambda: matches(a, 10))
    note("b matches", lambda: matches(b))
    a.close()
    b.close()
    return out


def test_both_backends_give_the_same_answers(tmp_path, postgres_url):
    lite, pg = transcript(str(tmp_path / "g.db")), transcript(postgres_url)
    assert [step[0] for step in lite] == [step[0] for step in pg]
    for x, y in zip(lite, pg):
        if "match" in x[0]:  # similarities: float32 sums (SQLite) against pgvector's float8 mean, to 1e-5
            assert [[n for n, _ in row] for row in x[1]] == [[n for n, _ in row] for row in y[1]], x[0]
            assert np.allclose([s for row in x[1] for _, s in row], [s for row in y[1] for _, s in row], atol=1e-5)
        else:
            assert x == y
    answers = dict((step[0], step[1:]) for step in lite)
    assert answers["wrong dimension"][0] == "GalleryError" and answers["delete again"][0] == "NotFoundError"
    assert answers["remove foreign"][0] == "NotFoundError" and answers["bad name"][0] == "GalleryError"
    # Ada went from both spaces through rec-b, Dee by name, Bob with his last sample
    assert [n for n, _ in answers["final list"][0]] == ["Cy", "Eve", "Юрий"]


def test_backend_is_chosen_by_the_spec(tmp_path, postgres_url):
    assert type(Gallery(str(tmp_path / "g.db"), "r")) is SQLiteGallery
    assert type(Gallery(postgres_url, "r")) is PostgresGallery
    with pytest.raises(GalleryError, match="unsupported gallery URL mysql://"):
        Gallery("mysql://db/x", "r")
    assert redact("postgresql://fl:s3cret@db.example:5432/gallery") == "postgresql://fl:***@db.example:5432/gallery"


def test_several_servers_see_each_others_writes(spec):
    a, b = Gallery(spec, "r"), Gallery(spec, "r")
    assert b.match(unit([1, 0, 0])) == []
    a.enroll("Ada", unit([1, 0, 0]))
    assert b.match(unit([1, 0, 0]))[0].identity == "Ada"
    a.enroll("Bob", unit([0, 1, 0]))
    assert [m.identity for m in b.match(unit([0, 1, 0]), 2)] == ["Bob", "Ada"]
    b.delete_identity("Bob")
    assert [m.identity for m in a.match(unit([0, 1, 0]), 2)] == ["Ada"] and a.identities() == [("Ada", 1)]
    sid = b.records()[0].samples[0].id
    a.remove_sample("Ada", sid)
    assert b.match(unit([1, 0, 0])) == [] and b.size() == 0


def test_concurrent_enrolments_lose_nothing(spec):
    """Four threads on two gallery objects enrol under one name at once: every sample is kept and the template is
    the mean of all of them."""
    galleries = [Gallery(spec, "r"), Gallery(spec, "r")]
    rng = np.random.default_rng(1)
    vectors = [unit(rng.normal(size=16) + 3) for _ in range(24)]
    errors = []

    def work(k):
        try:
            for v in vectors[k::4]:
                galleries[k % 2].enroll("Ada", v, enrolled_by=f"thread-{k}")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert galleries[1].identities() == [("Ada", 24)]
    mean = unit(np.sum(vectors, axis=0))
    probe = unit(rng.normal(size=16))
    for g in galleries:
        assert g.match(probe)[0].similarity == pytest.approx(float(mean @ probe), abs=1e-5)


def test_match_runs_in_sql_on_the_hnsw_index(postgres_url):
    import psycopg

    g = Gallery(postgres_url, "mobilefacenet")
    rng = np.random.default_rng(3)
    for i in range(50):
        g.enroll(f"person {i:02d}", unit(rng.normal(size=DIM)))
    q = unit(rng.normal(size=DIM))
    with psycopg.connect(postgres_url) as conn:
        conn.execute("SET enable_seqscan = off")  # 50 rows: without this the planner may scan the small table
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT t.identity_id FROM facelink_templates t WHERE t.recognizer = 'mobilefacenet' "
            f"AND t.dim = {DIM} ORDER BY (t.template::vector({DIM})) <=> %s::vector({DIM}) LIMIT 3",
            (g._text(q),)))
    assert "Index Scan using facelink_templates_hnsw_" in plan and "Order By" in plan
    best = g.match(q, 3)
    exact = sorted(((float(unit(np.asarray(v)) @ q), n) for n, v in _templates(postgres_url)), reverse=True)[:3]
    assert [m.identity for m in best] == [n for _, n in exact]


def _templates(url):
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT i.name, t.template::text FROM facelink_templates t "
                            "JOIN facelink_identities i ON i.id = t.identity_id").fetchall()
    return [(n, [float(x) for x in text.strip("[]").split(",")]) for n, text in rows]


def test_unreachable_database_is_reported_as_unavailable():
    with pytest.raises(GalleryUnavailable, match="cannot connect"):
        Gallery("postgresql://facelink@127.0.0.1:9/gallery?connect_timeout=2", "r")


def test_not_found_and_bad_ids(spec):
    g = Gallery(spec, "r")
    g.enroll("Ada", unit([1, 0]))
    with pytest.raises(NotFoundError):
        g.delete_identity("Bob")
    for bad in (0, -1, "1", 2**63, True):
        with pytest.raises(GalleryError, match="sample id"):
            g.remove_sample("Ada", bad)
    with pytest.raises(GalleryError, match="dimensions"):
        g.match(unit([1, 0, 0]))
    g.check()


def test_servers_need_no_superuser(postgres_url):
    """As cloud/deploy/init-gallery.sh sets it up: an administrator creates the extension and a plain role; the
    servers, connecting as that role, create their tables and indexes. Without the extension they are told what to
    ask for."""
    import psycopg

    role = "gallery_" + postgres_url.rsplit("_", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT CREATE, USAGE ON SCHEMA public TO {role}")
    as_role = postgres_url.replace("postgresql://postgres@", f"postgresql://{role}@")
    with pytest.raises(GalleryError, match="CREATE EXTENSION vector"):
        Gallery(as_role, "r")
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("CREATE EXTENSION vector")
    g = Gallery(as_role, "r")
    g.enroll("Ada", unit([1, 0]), enrolled_by="ops")
    assert g.match(unit([1, 0]))[0].identity == "Ada" and g.delete_identity("Ada").samples_removed == 1
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"DROP OWNED BY {role}")
        admin.execute(f"DROP ROLE {role}")


def test_dropped_connections_are_replaced(postgres_url):
    """The database drops every gallery connection (a restart, a failover, an idle timeout): the next reads and
    writes carry on, on new connections, with nothing lost."""
    import psycopg

    g = Gallery(postgres_url, "r")
    g.enroll("Ada", unit([1, 0]))
    assert g.match(unit([1, 0]))[0].identity == "Ada"
    db = postgres_url.rsplit("/", 1)[1]

    def drop_connections():
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            n = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s "
                              "AND application_name = 'facelink'", (db,)).fetchone()[0]
        assert n >= 1

    drop_connections()
    assert g.match(unit([1, 0]))[0].identity == "Ada" and g.size() == 1
    drop_connections()
    assert g.enroll("Ada", unit([0.6, 0.8])) == 2
    drop_connections()
    g.check()
    assert g.identities() == [("Ada", 2)] and g.remove_sample("Ada", g.records()[0].samples[0].id).samples_left == 1


def test_gallery_command_on_postgres(postgres_url, capsys):
    import json

    from facelink.cloud.serving.gallery_cli import main

    g = Gallery(postgres_url, "r")
    g.enroll("Ada", unit([1, 0]), source="ada.jpg", enrolled_by="ops")
    g.enroll("Bob", unit([0, 1]))
    assert main(["--gallery", postgres_url, "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["name"], [(s["source"], s["enrolled_by"]) for s in r["samples"]]) for r in listed] == [
        ("Ada", [("ada.jpg", "ops")]), ("Bob", [("", "")])]
    assert main(["--gallery", postgres_url, "remove", "Bob", str(listed[1]["samples"][0]["id"])]) == 0
    assert main(["--gallery", postgres_url, "delete", "Ada"]) == 0
    assert "erased Ada (1 sample)" in capsys.readouterr().out and g.records() == []
    assert main(["--gallery", "postgresql://facelink:s3cret@127.0.0.1:9/gallery?connect_timeout=2", "list"]) == 2
    err = capsys.readouterr().err
    assert "cannot connect" in err and "s3cret" not in err
