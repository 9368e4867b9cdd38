"""The server's warm-up: its frames are valid containers of every model, it runs before SERVING, and it leaves
nothing behind: no gallery entry, no metric, the same answers afterwards."""
import numpy as np
import pytest
from server_support import ServerThread

from facelink.cloud.serving import warmup
from facelink.edge.client import Client, request
from facelink.edge.encoder import EdgePipeline
from facelink.shared import bitstream, codec, registry
from facelink.shared.alignment import TEMPLATE_IDS
from facelink.shared.registry import DEFAULT_MODEL


@pytest.mark.parametrize("name", registry.available())
def test_zero_containers_decode_to_zero_latents(name):
    bundle = registry.load(name)
    for tid, t in TEMPLATE_IDS.items():
        data = warmup.zero_container(bundle, t.height, t.width, tid)
        frame = bitstream.unpack(data)
        assert (frame.model_id, frame.height, frame.width, frame.template_id) == (bundle.model_id, t.height, t.width,
                                                                                   tid)
        y_hat = codec.decompress_latents(bundle.tables, frame)
        assert np.isfinite(y_hat).all()


def test_full_frame_shape_fits_the_pixel_budget():
    assert warmup.full_frame_shape(640 * 512) == (512, 640)
    for budget in (64 * 64, 100_000, 1024 * 1024, 1920 * 1088):
        h, w = warmup.full_frame_shape(budget)
        assert h * w <= budget and h % 64 == 0 and w % 64 == 0


def test_the_full_frame_shrinks_to_the_frame_byte_limit():
    """A server capped at a few kilobytes per container never receives a VGA frame whose zero latents cost more (the
    default model's: 4.5 kB), so its warm-up frame shrinks until it fits instead of refusing to start."""
    bundle = registry.load(DEFAULT_MODEL)
    full = warmup.largest_full_frame(bundle, 640 * 512, 1 << 20)
    assert (bitstream.unpack(full).height, bitstream.unpack(full).width) == (512, 640)
    small = warmup.largest_full_frame(bundle, 640 * 512, len(full) - 1)
    frame = bitstream.unpack(small)
    assert len(small) < len(full) and frame.height * frame.width < 512 * 640
    assert warmup.largest_full_frame(bundle, 640 * 512, 20) is None


def _metric(service, name: str) -> float:
    return sum(s.value for m in service.metrics.registry.collect() for s in m.samples if s.name == name)


def test_warm_up_leaves_no_trace_and_changes_no_answer(tmp_path, demo_faces):
    photo = (demo_faces / "enroll" / "Colin_Powell_0001.jpg").read_bytes()
    import cv2

    rgb = cv2.cvtColor(cv2.imread(str(demo_faces / "probe" / "Colin_Powell_0002.jpg")), cv2.COLOR_BGR2RGB)
    crop = EdgePipeline(DEFAULT_MODEL).process(rgb).data
    answers = {}
    for warm in (True, False):
        with ServerThread(gallery=str(tmp_path / f"g{warm}.db"), warmup=warm, max_streams=8) as s:
            svc = s.service
            assert svc.gallery.size() == 0
            for name in ("facelink_frames_total", "facelink_batch_size_count", "facelink_bytes_received_total"):
                assert _metric(svc, name) == 0, name
            with Client(s.target) as c:
                c.enroll("Colin Powell", image=photo)
                (r,) = c.recognize_stream([request("probe", crop)])
            assert r.WhichOneof("outcome") == "result", r
            # the same metrics count a client's frame
            assert _metric(svc, "facelink_frames_total") == 1 and _metric(svc, "facelink_batch_size_count") == 2
            answers[warm] = (r.result.identity, round(r.result.similarity, 5))
    assert answers[True] == answers[False] and answers[True][0] == "Colin Powell"
