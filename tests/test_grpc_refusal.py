"""The gRPC refusal control: a bare server serves messages under its limit and refuses ones over it, under gRPC's
default transport options and facelink serve's, and a client with a send limit refuses locally (codes only; the
timings are the benchmark's)."""
import json

from facelink.benchmarks import grpc_refusal


def test_the_control_serves_under_the_limit_and_refuses_over_it(tmp_path):
    out = tmp_path / "r.json"
    argv = ["--calls", "1", "--limit", "256", "--large", "4096", "--variants", "grpc_defaults", "facelink_serve",
            "--out", str(out)]
    assert grpc_refusal.main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["command"].endswith(" ".join(argv))
    assert doc["variants"]["facelink_serve"]["server_options"] == [["grpc.http.tarpit", 0]]
    for variant in ("grpc_defaults", "facelink_serve"):
        for kind in ("aio", "thread_pool"):
            cases = doc["variants"][variant]["servers"][kind]
            for case in ("small", "under_limit"):
                assert cases[case]["codes"] == ["OK"]
            for case in ("over_limit", "far_over_limit", "client_send_limit"):
                assert cases[case]["codes"] == ["RESOURCE_EXHAUSTED"]
