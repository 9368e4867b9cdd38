"""A real server on loopback: health, reflection, model info, enrollment, and a stream that survives bad frames."""
import json
import signal
import struct
import subprocess
import sys
import time
import zlib

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from facelink.edge.client import Client, request
from facelink.edge.encoder import EdgePipeline
from facelink.shared import bitstream, registry
from facelink.v1 import facelink_pb2 as pb

MAX_FRAME = 4000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("server")
    ready = work / "ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "facelink.cloud.cli", "serve", "--port", "0", "--gallery",
                             str(work / "gallery.db"), "--ready-file", str(ready), "--max-frame-bytes",
                             str(MAX_FRAME)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while not ready.exists():
        if proc.poll() is not None:
            pytest.fail(f"server exited: {proc.stdout.read()}")
        if time.time() - t0 > 120:
            proc.kill()
            pytest.fail("server did not start")
        time.sleep(0.2)
    info = json.loads(ready.read_text())
    yield {"target": f"127.0.0.1:{info['port']}", "work": work, "proc": proc}
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def client(server):
    with Client(server["target"]) as c:
        c.wait_ready(30)
        yield c


def test_health_and_reflection(server):
    with grpc.insecure_channel(server["target"]) as ch:
        for service in ("", "facelink.v1.FaceLink"):
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert r.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        resp = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in resp.list_services_response.service}
        assert {"facelink.v1.FaceLink", "grpc.health.v1.Health"} <= names


def test_model_info_names_the_edge_model(client):
    info = client.model_info()
    assert registry.load().model_id in {m.model_id for m in info.models}
    # the newest container version the server reads (what an edge compares with what it writes), not the one it
    # would write: version 3, a variable-rate model's, is read although fixed-rate models write version 2
    assert info.bitstream_format_version == max(bitstream.READABLE_VERSIONS) == bitstream.VARIABLE_RATE_VERSION
    assert list(info.crop_template_ids) == [1, 2, 3]
    assert info.recognizer == "mobilefacenet" and info.max_frame_bytes == MAX_FRAME


def test_an_edge_writing_any_readable_version_is_accepted(client):
    """The edge's check before sending (facelink-edge) passes for every version the server reads, version 3
    included, and refuses only a version newer than the server's."""
    from facelink.edge.cli import EdgeError, check_server_model

    model_id = registry.load().model_id
    for version in bitstream.READABLE_VERSIONS:
        check_server_model(client, model_id, version)
    with pytest.raises(EdgeError, match="reads bitstream format versions up to 3"):
        check_server_model(client, model_id, max(bitstream.READABLE_VERSIONS) + 1)


def _recrc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_enroll_then_stream_with_bad_frames(client, demo_faces):
    enrolled = client.enroll("Colin Powell", image=(demo_faces / "enroll" / "Colin_Powell_0001.jpg").read_bytes())
    assert enrolled.samples == 1
    photo = (demo_faces / "enroll" / "Colin_Powell_0001.jpg").read_bytes()
    assert client.enroll("Colin Powell", image=photo).samples == 2
    client.enroll("Tony Blair", image=(demo_faces / "enroll" / "Tony_Blair_0001.jpg").read_bytes())

    import cv2

    rgb = cv2.cvtColor(cv2.imread(str(demo_faces / "probe" / "Colin_Powell_0002.jpg")), cv2.COLOR_BGR2RGB)
    good = EdgePipeline().process(rgb).data
    big = cv2.resize(rgb, (rgb.shape[1] * 2, rgb.shape[0] * 2), interpolation=cv2.INTER_CUBIC)
    full = EdgePipeline(full_frame=True).process(big).data
    assert len(full) > MAX_FRAME
    corrupted = bytearray(good)
    corrupted[len(good) // 2] ^= 0x40
    body = bytearray(good[:-4])
    body[6:14] = bytes.fromhex("ffffffffffffffff")
    wrong_model = _recrc(bytes(body))
    # a frame whose CRC is right but whose payload was damaged before the CRC was computed
    body = bytearray(good[:-4])
    body[-10] ^= 0x55
    bad_payload = _recrc(bytes(body))
    frames = [("ok-1", good), ("corrupt", bytes(corrupted)), ("truncated", good[: len(good) // 2]),
              ("wrong-model", wrong_model), ("oversize", full), ("not-flk", b"hello world"),
              ("bad-payload", bad_payload), ("empty", b""), ("ok-2", good)]
    resp = list(client.recognize_stream(request(rid, data, source=rid) for rid, data in frames))
    by_id = {r.id: r for r in resp}
    assert [r.id for r in resp] == [rid for rid, _ in frames]  # every request answered, ids echoed
    for rid in ("ok-1", "ok-2"):
        r = by_id[rid]
        assert r.WhichOneof("outcome") == "result", r
        assert r.result.face_found and r.result.identity == "Colin Powell"
        assert r.result.bytes == len(good) and r.result.width == 112
    codes = {rid: pb.Error.Code.Name(by_id[rid].error.code) for rid, _ in frames if not rid.startswith("ok")}
    assert codes == {"corrupt": "INVALID_BITSTREAM", "truncated": "INVALID_BITSTREAM", "wrong-model": "UNKNOWN_MODEL",
                     "oversize": "FRAME_TOO_LARGE", "not-flk": "INVALID_BITSTREAM",
                     "bad-payload": "INVALID_BITSTREAM", "empty": "INVALID_BITSTREAM"}
    assert "CRC32" in by_id["corrupt"].error.message


def test_a_smaller_crop_is_recognized_over_the_stream(client, demo_faces):
    """--crop-template arcface-96: the server names the crop's template, scales it to the recognizer's, and answers
    as for a 112×112 crop (the gallery holds Colin Powell from the test above)."""
    import cv2

    rgb = cv2.cvtColor(cv2.imread(str(demo_faces / "probe" / "Colin_Powell_0002.jpg")), cv2.COLOR_BGR2RGB)
    small = EdgePipeline(crop_template="arcface-96").process(rgb).data
    assert len(small) < len(EdgePipeline().process(rgb).data)
    r, = client.recognize_stream(iter([request("small", small, source="small")]))
    assert r.id == "small" and r.WhichOneof("outcome") == "result", r
    assert r.result.identity == "Colin Powell" and r.result.width == 96 and r.result.bytes == len(small)


def test_enroll_errors_are_clear(client, demo_faces):
    with pytest.raises(grpc.RpcError) as e:
        client.enroll("Nobody", image=b"not an image")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        client.enroll("", image=(demo_faces / "enroll" / "Tony_Blair_0001.jpg").read_bytes())
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    blank = cv2_png_blank()
    with pytest.raises(grpc.RpcError) as e:
        client.enroll("Blank", image=blank)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "no face" in e.value.details()
    names = {i.name for i in client.identities().identities}
    assert "Nobody" not in names and "Blank" not in names


def cv2_png_blank() -> bytes:
    import cv2
    import numpy as np

    ok, buf = cv2.imencode(".png", np.full((120, 120, 3), 127, np.uint8))
    return buf.tobytes()


def test_gallery_survives_restart(server, client):
    """What was enrolled is in the SQLite file, not only in memory."""
    from facelink.cloud.serving.gallery import Gallery

    g = Gallery(server["work"] / "gallery.db", "mobilefacenet")
    assert dict(g.identities())["Colin Powell"] == 2
    g.close()
