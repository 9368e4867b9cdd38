"""The same frames sent by 8 clients at once and by one client one at a time give the same answers (a real server on
loopback): full-frame containers (the server's YuNet, one per worker thread), aligned crops, and Enroll images.

With ``--batching off`` every field of every answer is identical. With batching on (the default) the synthesis and
the recognizer run on batches whose size depends on the load, and a batched convolution rounds differently in the
last bits, so identities, face_found, matches' names and order and error codes are identical and similarities
agree within 1e-5.
"""
import random
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import pytest
from server_support import ServerThread

from facelink.cloud.serving.gallery import Gallery
from facelink.cloud.serving.recognizers import MobileFaceNetRecognizer
from facelink.edge.client import Client, request
from facelink.edge.encoder import EdgePipeline
from facelink.shared.registry import DEFAULT_MODEL

CLIENTS = 8


@pytest.fixture(scope="module")
def inputs(demo_faces):
    probes = sorted((demo_faces / "probe").glob("*.jpg"))
    frames = []
    for p in probes:
        rgb = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        frames.append((f"full-{p.stem}", EdgePipeline(DEFAULT_MODEL, full_frame=True).process(rgb).data))
        frames.append((f"crop-{p.stem}", EdgePipeline(DEFAULT_MODEL).process(rgb).data))
    enroll = [(p.stem, p.read_bytes()) for p in sorted((demo_faces / "enroll").glob("*.jpg"))]
    enroll += [(f"{p.stem}-photo", p.read_bytes()) for p in probes[::2]]
    return frames, enroll


def _answer(resp):
    if resp.WhichOneof("outcome") == "error":
        return ("error", resp.error.code)
    r = resp.result
    return ("result", r.face_found, r.identity, r.similarity, tuple((m.identity, m.similarity) for m in r.matches),
            r.width, r.height)


def _person(name: str) -> str:
    """The enrolled image behind a gallery name ("S x", "C3 x" are copies of one embedding)."""
    return name.split(" ", 1)[-1]


def _close(got, want) -> bool:
    """Equal up to float rounding: same outcome, face_found, person and size; similarities within 1e-5. Copies of one
    embedding tie, so which copy's name comes first may differ by a rounding; the person behind it may not."""
    if got[0] != want[0] or got[0] == "error":
        return got == want
    return (got[1] == want[1] and _person(got[2]) == _person(want[2]) and got[5:] == want[5:]
            and abs(got[3] - want[3]) <= 1e-5 and len(got[4]) == len(want[4])
            and all(_person(a[0]) == _person(b[0]) and abs(a[1] - b[1]) <= 1e-5 for a, b in zip(got[4], want[4])))


def _recognize_all(target, frames, order):
    with Client(target) as c:
        resp = list(c.recognize_stream(request(rid, data, top_k=5) for rid, data in (frames[i] for i in order)))
    assert [r.id for r in resp] == [frames[i][0] for i in order]
    return {r.id: _answer(r) for r in resp}


@pytest.mark.parametrize("batching", [False, True], ids=["batching-off", "batching-on"])
def test_concurrent_equals_serial(tmp_path, inputs, batching):
    frames, enroll = inputs
    gallery = tmp_path / "gallery.db"
    with ServerThread(gallery=str(gallery), workers=4, batching=batching) as server:
        with Client(server.target) as c:  # serial enrolments, one at a time
            for name, data in enroll:
                assert c.enroll(f"S {name}", image=data, source_name=name).samples == 1

        def enroll_all(k):
            rng = random.Random(k)
            order = list(range(len(enroll)))
            rng.shuffle(order)
            with Client(server.target) as c:
                for i in order:
                    name, data = enroll[i]
                    assert c.enroll(f"C{k} {name}", image=data).samples == 1  # no "no face found" under load

        start = threading.Barrier(CLIENTS)
        with ThreadPoolExecutor(CLIENTS) as ex:
            list(ex.map(lambda k: (start.wait(), enroll_all(k)), range(CLIENTS)))

        serial = {}
        for i in range(len(frames)):  # one frame per stream, one stream at a time
            serial.update(_recognize_all(server.target, frames, [i]))

        def stream(k):
            order = list(range(len(frames)))
            random.Random(100 + k).shuffle(order)
            start.wait()
            return _recognize_all(server.target, frames, order)

        with ThreadPoolExecutor(CLIENTS) as ex:
            concurrent = list(ex.map(stream, range(CLIENTS)))

    assert all(a[0] == "result" and a[1] for a in serial.values()), serial  # every probe has its face found
    differing = []
    for k, answers in enumerate(concurrent):
        for rid, got in answers.items():
            want = serial[rid]
            same = got == want if not batching else _close(got, want)
            if not same:
                differing.append((k, rid, want, got))
    assert not differing, f"{len(differing)} of {CLIENTS * len(frames)} answers differ: {differing[:3]}"

    # every concurrent enrolment stored exactly the embedding the serial one did, bit for bit
    with Gallery(str(gallery), MobileFaceNetRecognizer.name) as g:
        assert g.size() == len(enroll) * (CLIENTS + 1)
    with sqlite3.connect(gallery) as db:
        stored = dict(db.execute("SELECT i.name, e.vector FROM embeddings e JOIN identities i ON i.id = e.identity_id"))
    for name, _ in enroll:
        assert {stored[f"C{k} {name}"] for k in range(CLIENTS)} == {stored[f"S {name}"]}, name
