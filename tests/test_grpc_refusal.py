"""The gRPC refusal control: a bare server serves a message under its limit and refuses one over it, and a client
with a send limit refuses locally (codes only; the timings are the benchmark's)."""
from facelink.benchmarks import grpc_refusal


def test_the_control_serves_under_the_limit_and_refuses_over_it(tmp_path):
    out = tmp_path / "r.json"
    assert grpc_refusal.main(["--calls", "1", "--limit", "256", "--out", str(out)]) == 0
    import json

    doc = json.loads(out.read_text())
    assert doc["command"].endswith("--calls 1 --limit 256 --out " + str(out))
    for kind in ("aio", "thread_pool"):
        cases = doc["servers"][kind]
        assert cases["under_limit"]["codes"] == ["OK"]
        assert cases["over_limit"]["codes"] == ["RESOURCE_EXHAUSTED"]
        assert cases["client_send_limit"]["codes"] == ["RESOURCE_EXHAUSTED"]
