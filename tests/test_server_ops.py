"""Operations on a real ``facelink serve`` process: Prometheus metrics, readiness, the version from the package's
metadata, and SIGTERM (NOT_SERVING, frames in flight answered, the stream ended UNAVAILABLE, a clean exit)."""
import importlib.metadata
import signal
import threading
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_support import serve_process

from facelink.edge.client import Client, request
from facelink.edge.encoder import EdgePipeline
from facelink.shared.registry import DEFAULT_MODEL


@pytest.fixture(scope="module")
def crop(face_rgb):
    return EdgePipeline(DEFAULT_MODEL).process(face_rgb).data


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_metrics_version_readiness_and_a_clean_sigterm(tmp_path, crop, demo_faces):
    proc, info = serve_process(tmp_path, "--gallery", str(tmp_path / "g.db"), "--metrics-port", "0",
                               "--shutdown-grace-s", "20")
    try:
        with Client(f"127.0.0.1:{info['port']}") as c:
            health = health_pb2_grpc.HealthStub(c.channel)
            assert health.Check(health_pb2.HealthCheckRequest(service="facelink.v1.FaceLink"),
                                timeout=20).status == health_pb2.HealthCheckResponse.SERVING
            assert c.model_info().server_version == importlib.metadata.version("facelink")
            c.enroll("Tony Blair", image=(demo_faces / "enroll" / "Tony_Blair_0001.jpg").read_bytes())
            answers = list(c.recognize_stream([request("a", crop), request("b", b"junk"), request("c", crop)]))
            assert [a.WhichOneof("outcome") for a in answers] == ["result", "error", "result"]
            m = _metrics(info["metrics_port"])
            assert m['facelink_frames_total{code="OK",outcome="result"}'] == 2
            assert m['facelink_frames_total{code="INVALID_BITSTREAM",outcome="error"}'] == 1
            assert m["facelink_frame_seconds_count"] == 3 and m["facelink_decode_seconds_count"] == 2
            assert m["facelink_recognize_seconds_count"] == 2
            assert m["facelink_bytes_received_total"] == 2 * len(crop) + 4
            assert m["facelink_gallery_identities"] == 1 and m['facelink_enrollments_total{outcome="ok"}'] == 1
            assert m["facelink_frames_in_flight"] == 0 and m["facelink_streams_active"] == 0

            # SIGTERM while a stream has frames in flight
            sent, stop = [], threading.Event()

            def frames():
                i = 0
                while not stop.is_set() and i < 2000:
                    sent.append(f"f{i}")
                    yield request(f"f{i}", crop)
                    i += 1
                    time.sleep(0.01)

            got = []
            stream = c.recognize_stream(frames())
            with pytest.raises(grpc.RpcError) as ended:
                for r in stream:
                    got.append(r)
                    if len(got) == 3:
                        proc.send_signal(signal.SIGTERM)
            stop.set()
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in ended.value.details()
        assert all(r.WhichOneof("outcome") == "result" for r in got)
        assert [r.id for r in got] == sent[: len(got)]  # every frame read was answered, in order, none skipped
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    err = (tmp_path / "server.err").read_text()
    out = (tmp_path / "server.out").read_text()
    assert "Traceback" not in err and "Error" not in err, err
    assert '"event": "stopped"' in out
