"""The gallery's RPCs on real servers on loopback: two servers on one gallery (a SQLite file, or PostgreSQL as
replicas share it), enrol through one, list (with the audit fields), recognise, remove a sample and delete the
identity through the other, and each sees the other's writes at once."""
import asyncio

import cv2
import grpc
import pytest

from facelink.cloud.serving.server import ServerConfig, start
from facelink.edge.encoder import EdgePipeline
from facelink.shared.registry import DEFAULT_MODEL
from facelink.v1 import facelink_pb2 as pb
from facelink.v1 import facelink_pb2_grpc as pb_grpc


async def _recognize(stub, data: bytes) -> pb.Recognition:
    async def frames():
        yield pb.RecognizeRequest(id="probe", bitstream=data)

    (resp,) = [r async for r in stub.Recognize(frames())]
    assert resp.WhichOneof("outcome") == "result", resp
    return resp.result


@pytest.fixture(params=["sqlite", "postgresql"])
def gallery(request, tmp_path):
    return str(tmp_path / "gallery.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def test_gallery_rpcs_across_two_servers_on_one_gallery(tmp_path, face_rgb, gallery):
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(face_rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    probe = EdgePipeline(DEFAULT_MODEL).process(face_rgb).data

    async def scenario():
        cfg = {"port": 0, "gallery": gallery, "models": [DEFAULT_MODEL], "workers": 1,
               "dedup_store": str(tmp_path / "dedup.db")}
        server_a, port_a, _ = await start(ServerConfig(**cfg))
        server_b, port_b, _ = await start(ServerConfig(**cfg))
        try:
            async with (grpc.aio.insecure_channel(f"127.0.0.1:{port_a}") as ch_a,
                        grpc.aio.insecure_channel(f"127.0.0.1:{port_b}") as ch_b):
                a, b = pb_grpc.FaceLinkStub(ch_a), pb_grpc.FaceLinkStub(ch_b)
                assert (await _recognize(b, probe)).identity == ""  # B answers once, caching an empty gallery
                for k in (1, 2):
                    r = await a.Enroll(pb.EnrollRequest(identity="Colin Powell", image=jpeg,
                                                        source_name=f"cp{k}.jpg"))
                    assert r.samples == k
                with pytest.raises(grpc.aio.AioRpcError) as e:  # a name that normalisation would change: refused
                    await a.Enroll(pb.EnrollRequest(identity=" Colin  Powell", image=jpeg))
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'Colin Powell'" in e.value.details()
                await a.Enroll(pb.EnrollRequest(identity="Tony Blair", bitstream=probe, source_name="tb.flk"))

                listing = await b.ListIdentities(pb.ListIdentitiesRequest())
                assert [(i.name, i.samples) for i in listing.identities] == [("Colin Powell", 2), ("Tony Blair", 1)]
                colin = listing.identities[0]
                assert [(s.source_name, s.recognizer, s.enrolled_by) for s in colin.sample_records] == [
                    ("cp1.jpg", listing.recognizer, ""), ("cp2.jpg", listing.recognizer, "")]
                assert all(s.enrolled_at >= colin.created_at > 0 for s in colin.sample_records)
                seen = await _recognize(b, probe)  # B sees A's enrolments: no stale cache
                assert seen.identity in ("Colin Powell", "Tony Blair") and seen.similarity > 0.9

                first, second = (s.id for s in colin.sample_records)
                r = await b.RemoveSample(pb.RemoveSampleRequest(identity="Colin Powell", sample_id=first))
                assert (r.identity, r.samples, r.identity_deleted) == ("Colin Powell", 1, False)
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await a.RemoveSample(pb.RemoveSampleRequest(identity="Colin Powell", sample_id=first))
                assert e.value.code() == grpc.StatusCode.NOT_FOUND and "no sample" in e.value.details()

                d = await a.DeleteIdentity(pb.DeleteIdentityRequest(identity="Tony  Blair"))
                assert (d.identity, d.samples_removed) == ("Tony Blair", 1)
                assert (await _recognize(b, probe)).matches[0].identity == "Colin Powell"
                r = await b.RemoveSample(pb.RemoveSampleRequest(identity="Colin Powell", sample_id=second))
                assert (r.samples, r.identity_deleted) == (0, True)
                assert not (await a.ListIdentities(pb.ListIdentitiesRequest())).identities
                assert not (await _recognize(a, probe)).matches

                for call, req, code in (
                        (b.DeleteIdentity, pb.DeleteIdentityRequest(identity="Colin Powell"), "NOT_FOUND"),
                        (b.DeleteIdentity, pb.DeleteIdentityRequest(identity="C\u200bolin"), "INVALID_ARGUMENT"),
                        (b.RemoveSample, pb.RemoveSampleRequest(identity="Colin Powell"), "INVALID_ARGUMENT")):
                    with pytest.raises(grpc.aio.AioRpcError) as e:
                        await call(req)
                    assert e.value.code().name == code, e.value.details()
        finally:
            await server_a.stop(None)
            await server_b.stop(None)

    asyncio.run(scenario())
