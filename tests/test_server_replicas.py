"""Two ``facelink serve`` replicas on one PostgreSQL gallery, on loopback: enrol through one, recognise through the
other, a client balancing both with round_robin, and one replica killed mid-stream while the client carries on
through the other (resending the frames the dead one had not answered, as the edge's sender does)."""
import signal
import time
import urllib.request

import cv2
import grpc
from server_support import serve_process

from facelink.edge.client import Client, request
from facelink.edge.encoder import EdgePipeline
from facelink.shared.registry import DEFAULT_MODEL
from facelink.v1 import facelink_pb2 as pb


def _streams_active(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("facelink_streams_active "))


def _frames_answered(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("facelink_frames_total{"))


def test_two_replicas_enrol_recognise_and_survive_a_kill(tmp_path, postgres_url, demo_faces, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing of the replicas' may land in the working folder (see the end)
    replicas = []
    try:
        for name in ("a", "b"):
            work = tmp_path / name
            work.mkdir()
            replicas.append(serve_process(work, "--gallery", postgres_url, "--metrics-port", "0"))
        (proc_a, a), (proc_b, b) = replicas
        probe = cv2.cvtColor(cv2.imread(str(demo_faces / "probe" / "Colin_Powell_0002.jpg")), cv2.COLOR_BGR2RGB)
        crop = EdgePipeline(DEFAULT_MODEL).process(probe).data

        with Client(f"127.0.0.1:{a['port']}") as through_a:
            for person in ("Colin_Powell", "Tony_Blair"):
                photo = (demo_faces / "enroll" / f"{person}_0001.jpg").read_bytes()
                through_a.enroll(person.replace("_", " "), image=photo)
        with Client(f"127.0.0.1:{b['port']}") as through_b:
            (r,) = through_b.recognize_stream([request("b", crop)])
            assert r.result.identity == "Colin Powell"  # B sees what was enrolled through A
            assert [i.name for i in through_b.identities().identities] == ["Colin Powell", "Tony Blair"]

        # an edge's frame answered by A and resent to B (its answer was lost): B replays A's answer, once
        keyed = pb.RecognizeRequest(id="k", bitstream=crop, device_id="cam-1/0", sequence=7)
        with Client(f"127.0.0.1:{a['port']}") as through_a, Client(f"127.0.0.1:{b['port']}") as through_b:
            (first,) = through_a.recognize_stream([keyed])
            (again,) = through_b.recognize_stream([keyed])
        assert first.result.identity == "Colin Powell" and not first.replayed
        assert again.replayed and again.result.similarity == first.result.similarity

        both = [f"127.0.0.1:{a['port']}", f"127.0.0.1:{b['port']}"]
        with Client(both, timeout=30) as balanced:
            balanced.wait_ready(30)
            for k in range(10):  # one stream per call: round_robin spreads them over the replicas
                (r,) = balanced.recognize_stream([request(f"rr{k}", crop)])
                assert r.result.identity == "Colin Powell"
            assert _frames_answered(a["metrics_port"]) >= 1 and _frames_answered(b["metrics_port"]) >= 2

            ids = [f"f{i}" for i in range(60)]
            answered: dict[str, str] = {}
            broken = 0
            killed = None
            while len(answered) < len(ids) and broken < 5:
                pending = [i for i in ids if i not in answered]

                def frames(pending=pending):
                    for rid in pending:
                        yield request(rid, crop)
                        time.sleep(0.02)

                try:
                    for r in balanced.recognize_stream(frames()):
                        answered[r.id] = r.result.identity
                        if len(answered) == 10 and killed is None:  # kill the replica serving this stream
                            killed = next(p for p, info in replicas if _streams_active(info["metrics_port"]) == 1)
                            killed.send_signal(signal.SIGKILL)
                            killed.wait(30)
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.UNAVAILABLE, e
                    broken += 1
        assert killed is not None and broken >= 1
        which = "A" if killed is proc_a else "B"
        print(f"replicas A:{a['port']} B:{b['port']} on one PostgreSQL gallery; killed {which} (SIGKILL)"
              f" after 10 answers; stream broken {broken}x, resent; {len(answered)}/{len(ids)} answered, "
              f"identities {sorted(set(answered.values()))}")
        assert sorted(answered) == sorted(ids) and set(answered.values()) == {"Colin Powell"}
        assert not list(tmp_path.glob("*.db"))  # the de-duplication store is the gallery's database, not a file
    finally:
        for proc, _ in replicas:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except Exception:  # noqa: BLE001
                    proc.kill()
