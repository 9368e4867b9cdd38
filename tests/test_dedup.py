"""The server's de-duplication store and the once-per-key answering, on real SQLite files."""
import threading
import time

import pytest

from facelink.cloud.serving.dedup import DedupError, Deduplicator, DedupStore, path_beside
from facelink.cloud.serving.dedup_postgres import PostgresDedupStore
from facelink.v1 import facelink_pb2 as pb


def _answer(identity: str) -> bytes:
    return pb.RecognizeResponse(result=pb.Recognition(face_found=True, identity=identity)).SerializeToString()


def test_store_keeps_the_first_answer_and_counts(tmp_path):
    store = DedupStore(tmp_path / "d.db")
    assert store.get("cam/1", 5) is None
    assert store.put("cam/1", 5, _answer("A")) == _answer("A")
    assert store.put("cam/1", 5, _answer("B")) == _answer("A")  # a second recognition never replaces the first
    assert store.get("cam/1", 5) == _answer("A")
    assert store.get("cam/2", 5) is None  # keys are per device id
    store.close()
    (d,) = DedupStore.read_deliveries(tmp_path / "d.db", "cam/1")
    assert (d.sequence, d.recognised, d.replays) == (5, 2, 1)


def test_store_survives_reopen_and_is_bounded(tmp_path):
    store = DedupStore(tmp_path / "d.db", max_entries=3)
    for seq in range(1, 6):
        store.put("cam/1", seq, _answer(str(seq)))
    store.prune()
    assert [d.sequence for d in store.deliveries()] == [3, 4, 5]  # the oldest beyond the count bound go
    store.close()
    time.sleep(0.01)
    store = DedupStore(tmp_path / "d.db", max_age_s=1e-3)  # opening prunes by age
    assert store.deliveries() == []
    store.put("cam/1", 6, _answer("6"))
    time.sleep(0.01)
    assert store.prune() == 1
    store.close()
    with pytest.raises(DedupError, match="positive"):
        DedupStore(tmp_path / "e.db", max_entries=0)
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    with pytest.raises(DedupError, match="not a usable"):
        DedupStore(tmp_path / "junk.db")


def test_path_beside_the_gallery(tmp_path):
    assert path_beside(tmp_path / "gallery.db") == str(tmp_path / "gallery-dedup.db")
    assert path_beside(":memory:") == ":memory:"


def test_a_key_is_recognised_once_even_when_two_deliveries_overlap(tmp_path):
    calls, gate = [], threading.Event()

    def recognize(req):
        calls.append(req.id)
        gate.wait(10)  # hold the first recognition until the overlapping delivery is waiting for it
        return pb.RecognizeResponse(id=req.id, source=req.source, result=pb.Recognition(identity="A"))

    dedup = Deduplicator(DedupStore(tmp_path / "d.db"))
    reqs = [pb.RecognizeRequest(id=f"r{i}", source=f"s{i}", device_id="cam/1", sequence=9) for i in range(2)]
    out = {}
    threads = [threading.Thread(target=lambda r=r: out.__setitem__(r.id, dedup.answer(r, recognize))) for r in reqs]
    threads[0].start()
    while not calls:
        time.sleep(0.01)
    threads[1].start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join()
    assert calls == ["r0"]
    assert not out["r0"].replayed and out["r1"].replayed
    assert (out["r1"].id, out["r1"].source, out["r1"].result.identity) == ("r1", "s1", "A")
    later = dedup.answer(pb.RecognizeRequest(id="r2", device_id="cam/1", sequence=9), recognize)
    assert later.replayed and calls == ["r0"]


def test_server_faults_are_not_stored_and_bad_device_ids_refused(tmp_path):
    dedup = Deduplicator(DedupStore(tmp_path / "d.db"))
    faults = []

    def failing(req):
        faults.append(req.id)
        return pb.RecognizeResponse(id=req.id, error=pb.Error(code=pb.Error.INTERNAL, message="boom"))

    req = pb.RecognizeRequest(id="a", device_id="cam/1", sequence=1)
    assert dedup.answer(req, failing).error.code == pb.Error.INTERNAL
    assert dedup.answer(req, failing).error.code == pb.Error.INTERNAL
    assert faults == ["a", "a"]  # a server fault is not the frame's answer: a repeat is recognised again
    long = pb.RecognizeRequest(id="b", device_id="x" * 300, sequence=1)
    assert dedup.answer(long, failing).error.code == pb.Error.INVALID_ARGUMENT


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request, tmp_path):
    """Opens a store on one place: a SQLite file, or a PostgreSQL database (a real server, conftest)."""
    if request.param == "sqlite":
        return lambda **bounds: DedupStore(tmp_path / "d.db", **bounds)
    url = request.getfixturevalue("postgres_url")
    return lambda **bounds: PostgresDedupStore(url, **bounds)


def test_both_backends_keep_the_first_answer_count_and_bound(open_store):
    store = open_store()
    assert store.get("cam/1", 5) is None
    assert store.put("cam/1", 5, _answer("A")) == _answer("A")
    assert store.put("cam/1", 5, _answer("B")) == _answer("A")
    assert store.get("cam/1", 5) == _answer("A") and store.get("cam/2", 5) is None
    (d,) = store.deliveries("cam/1")
    assert (d.sequence, d.recognised, d.replays) == (5, 2, 1)
    store.close()
    store = open_store(max_entries=3)  # reopened: the answer is still there; the count bound applies
    for seq in range(6, 10):
        store.put("cam/1", seq, _answer(str(seq)))
    store.prune()
    assert [d.sequence for d in store.deliveries()] == [7, 8, 9]
    store.close()
    time.sleep(0.01)
    store = open_store(max_age_s=1e-3)  # opening prunes by age
    assert store.deliveries() == []
    store.close()


def test_replicas_on_one_database_share_their_answers(postgres_url):
    """Two servers on one PostgreSQL gallery (two stores on its database): a key answered by one is replayed by the
    other, and two recognitions of one key at once on both keep one answer."""
    a, b = PostgresDedupStore(postgres_url), PostgresDedupStore(postgres_url)
    assert a.put("cam/1", 1, _answer("A")) == _answer("A")
    assert b.get("cam/1", 1) == _answer("A")
    results = []
    threads = [threading.Thread(target=lambda s=s, n=n: results.append(s.put("cam/1", 2, _answer(n))))
               for s, n in ((a, "X"), (b, "Y"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and results[0] in (_answer("X"), _answer("Y"))
    (d,) = a.deliveries("cam/1")[1:]
    assert d.recognised == 2  # counted: what de-duplication within one server (Deduplicator) prevents
    a.close()
    b.close()
