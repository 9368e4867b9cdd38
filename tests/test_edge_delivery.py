"""Exactly-once delivery from the edge, with real processes: a real server killed and restarted, a link cut by a real
TCP proxy for longer than the back-off, a real client killed and restarted. Every crop must end delivered exactly
once, counted from the server's side (its de-duplication store), or counted as dropped by the outbox's policy."""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
from concurrent import futures

import grpc
import pytest

from facelink.benchmarks.edge_delivery import Plan, ServerProcess, make_crops, make_frames, run_scenario
from facelink.cloud.serving.dedup import DedupStore
from facelink.edge.client import Client, request
from facelink.edge.outbox import Outbox
from facelink.edge.sender import Backoff, Connection, DeliveryError, Outgoing, ResultSink, Sender, add_send_parser
from facelink.v1 import facelink_pb2 as pb
from facelink.v1 import facelink_pb2_grpc as pb_grpc

FRAMES = 200  # the "at least 200 faces" per fault
TIMEOUT = 900.0  # generous: the shared machine can be slow; nothing here asserts a time


def test_backoff_grows_with_jitter_to_its_cap():
    b, rng = Backoff(base=0.25, cap=8.0), random.Random(1)
    for attempt in range(12):
        ceiling = min(8.0, 0.25 * 2 ** attempt)
        delays = [b.delay(attempt, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert b.delay(10_000, rng) <= 8.0


def test_results_file_recovers_a_half_written_line(tmp_path):
    f = tmp_path / "r.jsonl"
    f.write_bytes(b'{"sequence": 1}\n{"sequence": 2}\n{"sequ')
    sink = ResultSink(f)
    assert sink.last_row() == {"sequence": 2}
    sink.write({"sequence": 3})
    sink.close()
    assert [json.loads(x)["sequence"] for x in f.read_text().splitlines()] == [1, 2, 3]


def test_connection_takes_the_token_from_a_file_or_the_environment(tmp_path, monkeypatch):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    assert Connection("h:1", token_file=token).token() == "s3cret"
    monkeypatch.setenv("FACELINK_TEST_TOKEN", "from-env")
    assert Connection("h:1", token_env="FACELINK_TEST_TOKEN").token() == "from-env"
    monkeypatch.setenv("FACELINK_TEST_TOKEN", "")
    with pytest.raises(DeliveryError, match="is empty"):
        Connection("h:1", token_env="FACELINK_TEST_TOKEN").token()
    with pytest.raises(DeliveryError, match="both"):
        Connection("h:1", tls_ca=token, tls_cert=token)
    with pytest.raises(DeliveryError, match="no such file"):
        Connection("h:1", tls_ca=tmp_path / "missing.pem")
    with pytest.raises(DeliveryError, match="--tls-ca"):
        Connection("h:1", tls_server_name="facelink.example")
    send = add_send_parser(argparse.ArgumentParser().add_subparsers())
    assert send.parse_args(["x.flk", "--server", "a:1", "b:2"]).server == "a:1,b:2"  # the client's round robin
    options = {o for a in send._actions for o in a.option_strings}
    assert {"--token-file", "--token-env", "--tls-ca", "--tls-cert", "--tls-key"} <= options
    assert "--token" not in options  # a token on the command line is readable by every user of the machine


@pytest.fixture(scope="module")
def crops(tmp_path_factory, demo_faces):
    folder = tmp_path_factory.mktemp("crops")
    make_crops(folder, FRAMES, images=sorted(demo_faces.rglob("*.jpg")))
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("server"), start_timeout=TIMEOUT).start()
    yield srv
    srv.stop()


def _check(figures: dict, frames: int = FRAMES) -> None:
    assert figures["client_exit"] == 0
    assert figures["lost"] == 0 and figures["duplicates"] == 0, figures
    assert figures["delivered"] + figures["dropped_by_policy"] == figures["frames"] >= frames, figures
    assert figures["duplicate_result_lines"] == 0 and figures["missing_result_lines"] == 0, figures
    assert figures["sequences_match"] and figures["still_queued"] == 0, figures
    assert figures["error_answers"] == 0, figures  # every crop recognised, not just answered


@pytest.mark.slow
def test_repeats_are_replayed_and_old_clients_are_not_deduplicated(server, crops):
    data = sorted(crops.glob("*.flk"))[0].read_bytes()
    with Client(f"127.0.0.1:{server.port}") as c:
        c.wait_ready(60)
        old = list(c.recognize_stream([request("a", data), request("b", data)]))
        assert [r.replayed for r in old] == [False, False]  # no device id: every frame is recognised
        keyed = pb.RecognizeRequest(id="x", bitstream=data, device_id="test-device/1", sequence=7)
        first, again = list(c.recognize_stream([keyed])), list(c.recognize_stream([keyed]))
    assert not first[0].replayed and again[0].replayed and again[0].id == "x"
    assert again[0].result == first[0].result
    (d,) = DedupStore.read_deliveries(server.dedup, "test-device/1")
    assert (d.sequence, d.recognised, d.replays) == (7, 1, 1)


@pytest.mark.slow
def test_sender_in_process_delivers_and_resumes_from_the_outbox(server, crops, tmp_path):
    files = sorted(crops.glob("*.flk"))[:12]
    results = tmp_path / "results.jsonl"
    with Outbox(tmp_path / "outbox.db", device="in-process") as ob:
        sink = ResultSink(results)
        sender = Sender(ob, Connection(f"127.0.0.1:{server.port}").client, sink, window=4, log=lambda e: None)
        sender.start()
        for i, f in enumerate(files):
            sender.send(Outgoing(str(i), f.read_bytes(), source=f.name, fields={"frame": i}))
        stats = sender.finish(timeout=TIMEOUT)
        sink.close()
        assert stats.answered == len(files) and ob.stats().frames == 0
        device_id = ob.device_id
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(len(files)))
    assert [r["sequence"] for r in rows] == [d.sequence for d in DedupStore.read_deliveries(server.dedup, device_id)]


@pytest.mark.slow
def test_server_killed_and_restarted_during_run(demo_faces, tmp_path):
    """The camera path: facelink-edge run over a folder of face images (every face detected, aligned, coded) while
    the server is killed with SIGKILL and restarted. (facelink bench edge-delivery does the same with pre-coded
    crops through send, server_kill.)"""
    frames = make_frames(tmp_path / "frames", FRAMES, sorted(demo_faces.rglob("*.jpg")))
    figures = run_scenario("run_server_kill", tmp_path / "run", frames, Plan(FRAMES, kills=1, timeout_s=TIMEOUT))
    assert figures["server_kills"] == 1
    _check(figures, frames=FRAMES)  # at least one face per image


@pytest.mark.slow
def test_link_cut_for_longer_than_the_backoff(server, crops, tmp_path):
    figures = run_scenario("network_cut", tmp_path, crops, Plan(FRAMES, kills=1, backoff_max=0.5, cut_s=2.0,
                                                                  timeout_s=TIMEOUT), server=server)
    assert figures["network_cuts"] == 1
    _check(figures)


@pytest.mark.slow
def test_client_killed_and_restarted(server, crops, tmp_path):
    figures = run_scenario("client_kill", tmp_path, crops, Plan(FRAMES, kills=2, timeout_s=TIMEOUT), server=server)
    assert figures["client_kills"] == 2
    _check(figures)


@pytest.mark.slow
def test_outbox_overflow_during_an_outage_drops_the_oldest_and_counts_them(server, crops, tmp_path):
    figures = run_scenario("outbox_overflow", tmp_path, crops, Plan(FRAMES, kills=0, backoff_max=0.5, cut_s=1.0,
                                                                      timeout_s=TIMEOUT), server=server)
    assert figures["dropped_by_policy"] == figures["dropped_lines"] == FRAMES // 2
    assert figures["delivered_and_dropped"] == 0
    _check(figures)


def _certificates(folder):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made by the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=facelink test CA")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN=facelink test {name}")
        (folder / f"{name}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return {n: folder / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@pytest.mark.slow
def test_send_over_mutual_tls_with_a_token_from_the_environment(crops, tmp_path):
    from facelink.cloud.serving import auth

    pem = _certificates(tmp_path)
    token = auth.add_token(tmp_path / "tokens", "cam-1", "edge")
    server = ServerProcess(tmp_path, start_timeout=TIMEOUT, extra=(
        "--tls-cert", pem["server.pem"], "--tls-key", pem["server.key"], "--client-ca", pem["ca.pem"],
        "--auth-tokens", tmp_path / "tokens")).start()
    files = sorted(crops.glob("*.flk"))[:10]

    def send(env_token: str, device: str):
        return subprocess.run(
            [sys.executable, "-m", "facelink.edge.cli", "send", *map(str, files), "--server",
             f"127.0.0.1:{server.port}", "--tls-ca", str(pem["ca.pem"]), "--tls-cert", str(pem["client.pem"]),
             "--tls-key", str(pem["client.key"]), "--token-env", "FACELINK_TEST_TOKEN", "--device", device,
             "--outbox", str(tmp_path / f"{device}.db"), "--results", str(tmp_path / f"{device}.jsonl")],
            env=dict(os.environ, FACELINK_TEST_TOKEN=env_token), capture_output=True, text=True, timeout=TIMEOUT)

    try:
        ok = send(token, "cam-1")
        refused = send("flk_not-a-token", "cam-2")
    finally:
        server.stop()
    assert ok.returncode == 0, ok.stderr
    rows = [json.loads(x) for x in (tmp_path / "cam-1.jsonl").read_text().splitlines()]
    assert len(rows) == len(files) and all("error" not in r for r in rows)
    assert refused.returncode == 2 and "UNAUTHENTICATED" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    with Outbox(tmp_path / "cam-2.db") as ob:  # refused: what was queued stays queued for a later try
        s = ob.stats()
        assert s.acknowledged == 0 and s.frames == s.queued >= 1


def test_a_server_fault_is_retried_and_a_bad_crop_is_not(tmp_path):
    """INTERNAL (the server's fault) sends the crop again after a back-off; any other in-band error is its answer. A
    gRPC server on loopback stands in for the recognition server here: a real one cannot be made to fault on cue."""
    seen = []

    class Faulty(pb_grpc.FaceLinkServicer):
        def Recognize(self, request_iterator, context):
            for req in request_iterator:
                seen.append(req.sequence)
                if req.bitstream == b"bad":
                    yield pb.RecognizeResponse(id=req.id, error=pb.Error(code=pb.Error.INVALID_BITSTREAM))
                elif seen.count(req.sequence) <= 2:
                    yield pb.RecognizeResponse(id=req.id, error=pb.Error(code=pb.Error.INTERNAL, message="db down"))
                else:
                    yield pb.RecognizeResponse(id=req.id, result=pb.Recognition(face_found=True, identity="A"))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_FaceLinkServicer_to_server(Faulty(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Outbox(tmp_path / "o.db", device="cam") as ob:
            sink = ResultSink(tmp_path / "r.jsonl")
            sender = Sender(ob, Connection(f"127.0.0.1:{port}").client, sink, backoff=Backoff(0.01, 0.05),
                            log=lambda e: None).start()
            sender.send(Outgoing("1", b"good"))
            sender.send(Outgoing("2", b"bad"))
            stats = sender.finish(timeout=120)
            sink.close()
            assert ob.stats().frames == 0
    finally:
        server.stop(None)
    rows = {r["sequence"]: r for r in map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines())}
    assert rows[1]["identity"] == "A" and rows[2]["error"]["code"] == "INVALID_BITSTREAM"
    assert seen.count(1) == 3 and seen.count(2) == 1 and stats.fault_retries == 2
